//! `datasets`: CIFAR-10 / SVHN / Fashion-MNIST / image-folder readers, verified downloads, augmentation and
//! background batching, all on the CPU. Nothing here knows about GPUs, draws on the terminal or
//! opens a connection (the caller's [`download::Downloader`] does), and nothing here is random
//! (the caller chooses the order and the crops of a [`loader::Pass`]).

pub mod augment;
pub mod cifar10;
pub mod dataset;
pub mod download;
pub mod error;
pub mod fashion_mnist;
pub mod folder;
pub mod loader;
pub mod mat;
pub mod svhn;

use std::path::Path;

pub use dataset::{Dataset, ImageShape, Splits, IMAGE_BYTES, SIDE};
pub use download::Downloader;
pub use error::{DatasetError, Result};

/// The datasets the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum DatasetKind {
    /// CIFAR-10, the official binary batches (downloaded when missing).
    Cifar10,
    /// SVHN cropped digits, the official .mat files (downloaded when missing).
    Svhn,
    /// An image folder: ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/*.
    Folder,
    /// Fashion-MNIST, the official gzip IDX files (downloaded when missing); 1x28x28 images.
    #[cfg_attr(feature = "cli", value(name = "fashion-mnist"))]
    FashionMnist,
}

impl DatasetKind {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Svhn => "svhn",
            DatasetKind::Folder => "folder",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Whether the dataset has official files that can be downloaded.
    pub fn downloadable(self) -> bool {
        !matches!(self, DatasetKind::Folder)
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loads a dataset's splits from `dir`, downloading official files through `net` when given.
/// A split without images is an error (well-formed files may hold none).
pub fn load(kind: DatasetKind, dir: &Path, net: Option<&mut dyn Downloader>) -> Result<Splits> {
    let splits = match kind {
        DatasetKind::Cifar10 => cifar10::load(dir, net),
        DatasetKind::Svhn => svhn::load(dir, net),
        DatasetKind::Folder => folder::load(dir),
        DatasetKind::FashionMnist => fashion_mnist::load(dir, net),
    }?;
    for (split, data) in [("training", &splits.train), ("test", &splits.test)] {
        if data.is_empty() {
            return Err(DatasetError::Missing {
                what: format!("{split} images"),
                dir: dir.to_path_buf(),
                hint: format!(" ({kind}: the {split} split is empty)"),
            });
        }
    }
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::DatasetKind;

    #[test]
    fn kind_names_are_the_cli_names() {
        assert_eq!(DatasetKind::Cifar10.to_string(), "cifar10");
        assert!(!DatasetKind::Folder.downloadable());
    }
}
