//! `datasets`: CIFAR-10 / SVHN / image-folder readers, augmentation and batching, all on the
//! CPU. Nothing here knows about GPUs.

pub mod rng;

pub use rng::Rng;
