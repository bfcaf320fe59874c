//! The runtime itself: every WGSL file validates with naga (no GPU needed), parameter structs
//! agree in size with their WGSL mirrors, the pool reuses buffers, adapters are listed and a
//! bad adapter choice is a clear error.

use engine::gpu::{list_adapters, Gpu};
use engine::kernels::Shader;
use engine::ops::param_sizes;
use engine::Tensor;

fn module(s: Shader) -> naga::Module {
    naga::front::wgsl::parse_str(s.source()).unwrap_or_else(|e| panic!("{}: {}", s.file_name(), e.emit_to_string(s.source())))
}

#[test]
fn every_wgsl_file_parses_and_validates_without_a_gpu() {
    for s in Shader::ALL {
        let m = module(s);
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::IMMEDIATES)
            .validate(&m)
            .unwrap_or_else(|e| panic!("{}: {}", s.file_name(), e.emit_to_string(s.source())));
        assert!(m.entry_points.iter().all(|e| e.stage == naga::ShaderStage::Compute), "{}", s.file_name());
    }
}

#[test]
fn params_structs_match_their_wgsl_mirrors() {
    for (s, size) in param_sizes() {
        let m = module(s);
        let (_, var) = m
            .global_variables
            .iter()
            .find(|(_, v)| v.space == naga::AddressSpace::Immediate)
            .unwrap_or_else(|| panic!("{} declares no immediate params", s.file_name()));
        let layouter_size = m.types[var.ty].inner.size(m.to_ctx());
        assert_eq!(layouter_size as usize, size, "{}: WGSL Params is {layouter_size} bytes, Rust {size}", s.file_name());
        assert_eq!(size % 16, 0, "{}: keep Params a multiple of 16 bytes", s.file_name());
    }
}

#[test]
fn shaders_directory_has_no_unregistered_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    on_disk.sort();
    let mut registered: Vec<String> = Shader::ALL.iter().map(|s| s.file_name().to_string()).collect();
    registered.sort();
    assert_eq!(on_disk, registered);
}

#[test]
fn pool_reuses_buffers_and_bind_groups_once_warm() {
    let gpu = crate::common::gpu();
    let step = |gpu: &Gpu| {
        let a = Tensor::from_f32(gpu, &[1000], &vec![1.0; 1000]).unwrap();
        let b = engine::ops::arith::scale(gpu, &a, 2.0).unwrap();
        let c = engine::ops::arith::add(gpu, &a, &b).unwrap();
        c.to_vec(gpu).unwrap()
    };
    assert_eq!(step(&gpu), vec![3.0; 1000]);
    let warm = gpu.stats();
    for _ in 0..3 {
        step(&gpu);
    }
    let after = gpu.stats();
    assert_eq!(after.buffer_allocations, warm.buffer_allocations, "a warm step allocated buffers");
    assert_eq!(after.pipelines, warm.pipelines, "a warm step built pipelines");
    assert_eq!(after.bind_groups_created, warm.bind_groups_created, "a warm step built bind groups");
}

#[test]
fn adapters_are_listed_and_a_bad_choice_is_a_clear_error() {
    assert!(!list_adapters().is_empty());
    let err = Gpu::with_preference(Some("no-such-adapter-xyz")).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("no-such-adapter-xyz") && msg.contains("cifs-wgpu info"), "{msg}");
}

#[test]
fn timed_measures_recorded_work() {
    let gpu = crate::common::gpu();
    let t = Tensor::empty(&gpu, &[1 << 20]).unwrap();
    let (_, secs, clock) = gpu.timed(|| engine::ops::arith::fill_into(&gpu, &t, 2.0)).unwrap();
    assert!(secs > 0.0 && secs < 10.0, "{secs} s by {clock:?}");
    assert_eq!(t.to_vec(&gpu).unwrap()[12345], 2.0);
}
