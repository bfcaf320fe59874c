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
