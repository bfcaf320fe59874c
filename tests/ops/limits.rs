//! The device's limits: with `CIFS_WGPU_LIMITS=webgpu` (a run CI makes of this suite) the device
//! has WebGPU's default limits, not the adapter's; only the tile configurations that fit its
//! workgroup memory are chosen or may be forced; and a tensor too large for one binding is
//! refused with a typed error, whatever the limits.

use crate::common::*;
use engine::ops::conv2d::conv2d;
use engine::tune::{GemmTile, Tile};
use engine::{EngineError, Limits, RuntimeOptions, Tensor};

#[test]
fn the_device_has_the_limits_cifs_wgpu_limits_asks_for() {
    let l = rt().limits();
    let webgpu = wgpu::Limits::default();
    if RuntimeOptions::from_env().unwrap().limits == Limits::WebGpu {
        assert_eq!(l.max_workgroup_memory, webgpu.max_compute_workgroup_storage_size);
        assert_eq!(l.max_workgroup_invocations, webgpu.max_compute_invocations_per_workgroup);
        assert_eq!(l.max_storage_buffers_per_stage, webgpu.max_storage_buffers_per_shader_stage);
        assert_eq!(l.max_binding_bytes, webgpu.max_storage_buffer_binding_size);
        assert_eq!(l.max_buffer_bytes, webgpu.max_buffer_size);
    } else {
        // The adapter's own, which on any WebGPU-capable adapter are at least WebGPU's defaults.
        assert!(l.max_workgroup_memory >= webgpu.max_compute_workgroup_storage_size, "{l:?}");
        assert!(l.max_storage_buffers_per_stage >= webgpu.max_storage_buffers_per_shader_stage, "{l:?}");
    }
}

#[test]
fn only_tiles_that_fit_the_workgroup_memory_run_and_forcing_another_is_an_error() {
    let rt = rt();
    let limit = rt.limits().max_workgroup_memory;
    let (fit, too_big): (Vec<Tile>, Vec<Tile>) = Tile::ALL.into_iter().partition(|t| t.workgroup_bytes() <= limit);
    assert_eq!(rt.tiles(), fit);
    assert!(fit.contains(&Tile::T64X64), "the fallback tile must fit: {limit} bytes");
    let x = Tensor::from_f32(&rt, &[1, 3, 5, 5], &[0.5; 75]).unwrap();
    let w = Tensor::from_f32(&rt, &[4, 3, 3, 3], &[0.25; 108]).unwrap();
    for tile in too_big {
        let forced = with_kernels(&rt, |k| k.tile = Some(GemmTile::Simt(tile)));
        match conv2d(&forced, &x, &w, 1, 1) {
            Err(EngineError::TileNotRunnable { tile: t, why }) => {
                assert!(t == tile.name() && why.contains(&limit.to_string()), "{t}: {why}")
            }
            other => panic!("{}: {:?}", tile.name(), other.map(|t| t.shape().to_vec())),
        }
    }
    assert_eq!(conv2d(&rt, &x, &w, 1, 1).unwrap().shape(), [1, 4, 5, 5]);
}

#[test]
fn a_tensor_larger_than_one_binding_is_refused_with_a_typed_error() {
    let rt = rt();
    let limit = rt.limits().max_binding_bytes;
    let too_many = (limit / 4 + 1) as usize;
    match Tensor::zeros(&rt, &[too_many]) {
        Err(e @ EngineError::TooLarge { .. }) => assert!(e.to_string().contains("use a smaller batch"), "{e}"),
        other => panic!("{:?}", other.map(|t| t.shape().to_vec())),
    }
    // An op whose output alone is too large: a 1x1 convolution widening 1 channel of 2048 x 2048 to
    // 9 (144 MiB of output at 128 MiB per binding) fails as cleanly, before any dispatch.
    if limit < 9 * 2048 * 2048 * 4 {
        let x = Tensor::zeros(&rt, &[1, 1, 2048, 2048]).unwrap();
        let w = Tensor::zeros(&rt, &[9, 1, 1, 1]).unwrap();
        assert!(matches!(conv2d(&rt, &x, &w, 1, 0), Err(EngineError::TooLarge { .. })), "a 144 MiB output");
    }
}
