//! The runtime itself: every WGSL file validates with naga (no GPU needed), parameter structs
//! agree in size with their WGSL mirrors, the pool reuses buffers, adapters are listed and a
//! bad adapter choice is a clear error.

use engine::gpu::list_adapters;
use engine::Runtime;
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
    let mut registered: Vec<String> = Shader::ALL.iter().map(|s| s.file_name().to_string()).chain(engine::kernels::SHARED_SOURCES.map(String::from)).collect();
    registered.sort();
    assert_eq!(on_disk, registered);
}

#[test]
fn pool_reuses_buffers_and_bind_groups_once_warm() {
    let rt = crate::common::rt();
    let step = |rt: &Runtime| {
        let a = Tensor::from_f32(rt, &[1000], &vec![1.0; 1000]).unwrap();
        let b = engine::ops::arith::scale(rt, &a, 2.0).unwrap();
        let c = engine::ops::arith::add(rt, &a, &b).unwrap();
        c.to_vec(rt).unwrap()
    };
    assert_eq!(step(&rt), vec![3.0; 1000]);
    let warm = rt.stats();
    for _ in 0..3 {
        step(&rt);
    }
    let after = rt.stats();
    assert_eq!(after.buffer_allocations, warm.buffer_allocations, "a warm step allocated buffers");
    assert_eq!(after.pipelines, warm.pipelines, "a warm step built pipelines");
    assert_eq!(after.bind_groups_created, warm.bind_groups_created, "a warm step built bind groups");
}

#[test]
fn adapters_are_listed_and_a_bad_choice_is_a_clear_error() {
    assert!(!list_adapters().is_empty());
    let err = Runtime::with_preference(Some("no-such-adapter-xyz")).err().expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("no-such-adapter-xyz") && msg.contains("cifs-wgpu info"), "{msg}");
}

#[test]
fn timed_measures_recorded_work() {
    let rt = crate::common::rt();
    let t = Tensor::empty(&rt, &[1 << 20]).unwrap();
    let (_, secs, clock) = rt.timed(|| engine::ops::arith::fill_into(&rt, &t, 2.0)).unwrap();
    assert!(secs > 0.0 && secs < 10.0, "{secs} s by {clock:?}");
    assert_eq!(t.to_vec(&rt).unwrap()[12345], 2.0);
}

/// The value of a module-scope `const NAME: u32` of a shader, read with naga.
fn wgsl_const(s: Shader, name: &str) -> u32 {
    let m = module(s);
    let (_, c) = m.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("{} has no const {name}", s.file_name()));
    match m.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref other => panic!("{name} is {other:?}, not a u32 literal"),
    }
}

#[test]
fn conv_tile_sizes_are_the_shaders_own() {
    use engine::ops::conv2d::TILE_K;
    use engine::tune::Tile;
    assert_eq!(wgsl_const(Shader::Conv2d, "BK"), TILE_K);
    // The shader's default configuration (its overridable RM = RN = 4) is the 64x64 tile.
    assert_eq!((wgsl_const(Shader::Conv2d, "BM"), wgsl_const(Shader::Conv2d, "BN")), (Tile::T64X64.rows(), Tile::T64X64.cols()));
    // Each configuration specialises the source into a shader naga accepts, with its tile.
    for t in Tile::ALL {
        let src = engine::pipelines::specialise(Shader::Conv2d, &t.constants()).unwrap();
        let m = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", t.name(), e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all()).validate(&m).unwrap();
        let bm = m.constants.iter().find(|(_, c)| c.name.as_deref() == Some("BM")).map(|(_, c)| c.init).unwrap();
        let folded = matches!(m.global_expressions[bm], naga::Expression::Literal(naga::Literal::U32(v)) if v == t.rows());
        assert!(folded, "{}: BM is {:?}", t.name(), m.global_expressions[bm]);
        // The workgroup memory the host checks against the adapter's limit is the shader's own.
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(m.to_ctx()).unwrap();
        let bytes: u32 = m.global_variables.iter().filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup).map(|(_, v)| layouter[v.ty].size).sum();
        assert_eq!(bytes, t.workgroup_bytes(), "{}", t.name());
    }
}

#[test]
fn every_entry_point_declares_a_workgroup_size_the_grid_helper_can_use() {
    // 1-D dispatches size their grids from these (engine/src/pipelines.rs reads them the same
    // way), so each must be a literal, non-zero size.
    for s in Shader::ALL {
        for (entry, size) in engine::pipelines::workgroup_sizes(s).unwrap() {
            let size = size.unwrap_or_else(|| panic!("{}::{entry} has an override-sized workgroup", s.file_name()));
            assert!(size.iter().all(|&d| d >= 1), "{}::{entry}: {size:?}", s.file_name());
        }
    }
}

#[test]
fn a_one_dimensional_dispatch_beyond_one_grid_row_covers_every_item() {
    // 65 535 workgroups of 256 cover 16.8 M items; one more item needs a second grid row, and
    // the kernel must rebuild its index from both.
    let rt = crate::common::rt();
    let n = 256 * 65_535 + 300;
    let t = Tensor::empty(&rt, &[n]).unwrap();
    engine::ops::arith::fill_into(&rt, &t, 3.0).unwrap();
    let v = t.to_vec(&rt).unwrap();
    assert!(v[n - 300..].iter().all(|&x| x == 3.0) && v[0] == 3.0, "the tail past the first grid row was not written");
}

#[test]
fn a_read_started_early_sees_the_work_before_it_not_after() {
    // The training loop reads step i's loss while step i+1 is recorded and running.
    let rt = crate::common::rt();
    let t = Tensor::empty(&rt, &[1000]).unwrap();
    engine::ops::arith::fill_into(&rt, &t, 1.0).unwrap();
    let pending = rt.read_later(&[(t.buffer(), 4000)]).unwrap().pop().unwrap();
    let submits = rt.stats().submits;
    engine::ops::arith::fill_into(&rt, &t, 2.0).unwrap();
    let early: Vec<f32> = bytemuck::pod_collect_to_vec(&rt.finish_read(pending).unwrap());
    assert_eq!(early, vec![1.0; 1000], "the early read saw later work");
    assert_eq!(rt.stats().submits, submits, "finishing a read submits nothing");
    assert_eq!(t.to_vec(&rt).unwrap(), vec![2.0; 1000]);
}
