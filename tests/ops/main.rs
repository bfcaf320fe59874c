//! Every engine op on the real WGSL kernels (lavapipe in CI): forward and backward against the
//! float64 CPU reference in `engine_reference`, at odd sizes that do not fill a tile, plus a
//! finite-difference check of the GPU op itself.

#[path = "../common/mod.rs"]
mod common;

mod activation;
mod arith;
mod attack;
mod batchnorm;
mod batchnorm_sync;
mod channel_scale;
mod composite;
mod conv2d;
mod coop;
mod cross_entropy;
mod dlr_loss;
mod f16;
mod fab;
mod index;
mod kl_div;
mod limits;
mod linear;
mod margin_loss;
mod optim;
mod pool;
mod random;
mod runtime;
mod softmax;
mod workgroup_memory;
