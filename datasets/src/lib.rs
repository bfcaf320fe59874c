//! `datasets`: CIFAR-10 / SVHN / image-folder readers, downloads with checksums, augmentation
//! and background batching, all on the CPU. Nothing here knows about GPUs.

pub mod augment;
pub mod cifar10;
pub mod dataset;
pub mod download;
pub mod error;
pub mod folder;
pub mod loader;
pub mod mat;
pub mod rng;
pub mod svhn;

use std::path::Path;

pub use dataset::{Dataset, Splits, IMAGE_BYTES, SIDE};
pub use error::{DatasetError, Result};
pub use rng::Rng;

/// The dataset kinds the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cifar10,
    Svhn,
    Folder,
}

impl Source {
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "cifar10" => Some(Source::Cifar10),
            "svhn" => Some(Source::Svhn),
            "folder" => Some(Source::Folder),
            _ => None,
        }
    }
}

/// Loads a dataset's splits from `dir` (downloading official files when allowed).
pub fn load(source: Source, dir: &Path, download: bool) -> Result<Splits> {
    match source {
        Source::Cifar10 => cifar10::load(dir, download),
        Source::Svhn => svhn::load(dir, download),
        Source::Folder => folder::load(dir),
    }
}
