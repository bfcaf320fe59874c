//! An in-memory image-classification split: 32x32 RGB images as bytes in CHW order.

/// Side of every image.
pub const SIDE: usize = 32;
/// Bytes of one image: 3 channels of 32x32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// N images, each `IMAGE_BYTES` bytes: the red plane, then green, then blue, rows top-down.
    pub images: Vec<u8>,
    /// N labels, each < `classes.len()`.
    pub labels: Vec<u8>,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// The first `n` examples (all if fewer): `--limit-train` / `--limit-test`.
    pub fn truncated(mut self, n: usize) -> Dataset {
        let n = n.min(self.len());
        self.images.truncate(n * IMAGE_BYTES);
        self.labels.truncate(n);
        self
    }
}

/// Train and test splits of one dataset.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}
