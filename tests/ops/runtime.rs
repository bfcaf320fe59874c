//! The runtime itself: the pool reuses buffers, adapters are listed and a bad adapter choice
//! is a clear error, timing and early reads see the work they should. (The WGSL checks that
//! need no GPU are the engine's unit tests, engine/src/shader_tests.rs.)

use engine::gpu::list_adapters;
use engine::Runtime;
use engine::Tensor;

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
    let options = engine::RuntimeOptions { adapter: Some("no-such-adapter-xyz".into()), ..Default::default() };
    let err = Runtime::new(options).err().expect("must fail");
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
    let pending = rt.read_later(&[&t]).unwrap().pop().unwrap();
    let submits = rt.stats().submits;
    engine::ops::arith::fill_into(&rt, &t, 2.0).unwrap();
    let early = rt.finish_read_f32(pending).unwrap();
    assert_eq!(early, vec![1.0; 1000], "the early read saw later work");
    assert_eq!(rt.stats().submits, submits, "finishing a read submits nothing");
    assert_eq!(t.to_vec(&rt).unwrap(), vec![2.0; 1000]);
}

#[test]
fn copy_from_copies_on_the_gpu_and_refuses_another_size() {
    let rt = crate::common::rt();
    let src = Tensor::from_f32(&rt, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let dst = Tensor::zeros(&rt, &[6]).unwrap();
    dst.copy_from(&rt, &src).unwrap();
    assert_eq!(dst.to_vec(&rt).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let short = Tensor::zeros(&rt, &[5]).unwrap();
    assert!(short.copy_from(&rt, &src).is_err(), "a copy into a smaller tensor must fail");
    let labels = Tensor::from_u32(&rt, &[6], &[0; 6]).unwrap();
    assert!(labels.copy_from(&rt, &src).is_err(), "a copy between types must fail");
}

/// A runtime's kernel settings are its own, fixed when it is made, and a second runtime on the
/// same device (`Runtime::with_kernels`) shares its tensors: a 1x1 convolution with identity
/// weights returns its input exactly in f32 and rounded to f16 in f16 (1 + 2^-12 is no f16
/// value at the chosen scale), on tensors made by the other runtime, and the first runtime still
/// computes in f32 after the second has run.
#[test]
fn kernel_settings_are_fixed_per_runtime_and_tensors_pass_between_runtimes_of_one_device() {
    use engine::ops::conv2d::conv2d;
    use engine::Precision;
    let rt = crate::common::rt();
    let f16 = crate::common::with_kernels(&rt, |k| k.precision = Precision::F16);
    assert_eq!((rt.precision(), f16.precision()), (Precision::F32, Precision::F16));
    let c = 24;
    let x: Vec<f32> = (0..c).map(|i| if i % 2 == 0 { 1.0 + 2f32.powi(-12) } else { 1.0 }).collect();
    let eye: Vec<f32> = (0..c * c).map(|i| if i / c == i % c { 1.0 } else { 0.0 }).collect();
    let xt = Tensor::from_f32(&rt, &[1, c, 1, 1], &x).unwrap();
    let wt = Tensor::from_f32(&f16, &[c, c, 1, 1], &eye).unwrap();
    let exact = conv2d(&rt, &xt, &wt, 1, 0).unwrap().to_vec(&rt).unwrap();
    let rounded = conv2d(&f16, &xt, &wt, 1, 0).unwrap().to_vec(&f16).unwrap();
    assert_eq!(exact, x, "f32 keeps the input");
    assert_eq!(rounded, vec![1.0; c], "f16 rounds 1 + 2^-12 to 1");
    assert_eq!(conv2d(&rt, &xt, &wt, 1, 0).unwrap().to_vec(&rt).unwrap(), x, "the first runtime still runs f32");
}
