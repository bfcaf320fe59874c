//! An in-memory image-classification split: square images as bytes in CHW order.

/// Side of the CIFAR-10 / SVHN / folder images.
pub const SIDE: usize = 32;
/// Bytes of one of those images: 3 channels of 32x32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// Channels and side of a dataset's images (all square).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub side: usize,
}

impl ImageShape {
    /// CIFAR-10, SVHN, image folders.
    pub const RGB32: ImageShape = ImageShape { channels: 3, side: SIDE };
    /// Fashion-MNIST.
    pub const GRAY28: ImageShape = ImageShape { channels: 1, side: 28 };

    pub fn bytes(&self) -> usize {
        self.channels * self.side * self.side
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.side, self.side)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// N images, each `shape.bytes()` bytes: channel planes in order (R, G, B), rows top-down.
    pub images: Vec<u8>,
    /// N labels, each < `classes.len()`.
    pub labels: Vec<u8>,
    pub classes: Vec<String>,
    pub shape: ImageShape,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.shape.bytes();
        &self.images[i * b..(i + 1) * b]
    }

    /// A fixed, class-balanced subset of `n` examples (all if fewer): the classes take turns,
    /// each giving its next example in file order, until `n` are chosen (a class that runs out
    /// drops out). The chosen examples keep their file order. So the first `n` images of a
    /// class-sorted folder are not all one class (`--limit`, `--limit-train`, `--limit-test`).
    pub fn balanced(self, n: usize) -> Dataset {
        if n >= self.len() {
            return self;
        }
        let file_order: Vec<usize> = (0..self.len()).collect();
        self.subset(&self.held_out(n, &file_order))
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: indices.iter().flat_map(|&i| self.image(i).iter().copied()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            shape: self.shape,
        }
    }

    /// The indices of `n` examples (all if fewer) held out class-balanced: the classes take
    /// turns, each giving its next example in the order `order` (a permutation of the indices,
    /// the caller's seeded shuffle) lists them, until `n` are chosen; a class that runs out drops
    /// out. Returned sorted. [`Dataset::without`] is the rest.
    pub fn held_out(&self, n: usize, order: &[usize]) -> Vec<usize> {
        let classes = self.classes.len().max(1);
        let mut by_class: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); classes];
        for &i in order {
            by_class[self.labels[i] as usize % classes].push_back(i);
        }
        let mut chosen = Vec::with_capacity(n.min(self.len()));
        while chosen.len() < n.min(self.len()) {
            for queue in by_class.iter_mut() {
                if let Some(i) = queue.pop_front().filter(|_| chosen.len() < n) {
                    chosen.push(i);
                }
            }
        }
        chosen.sort_unstable();
        chosen
    }

    /// Every example but those at `indices` (sorted), in file order.
    pub fn without(&self, indices: &[usize]) -> Dataset {
        let kept: Vec<usize> = (0..self.len()).filter(|i| indices.binary_search(i).is_err()).collect();
        self.subset(&kept)
    }
}

/// Train and test splits of one dataset.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}
