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

    /// A fixed, class-balanced subset of `n` examples (all if fewer): the classes take turns,
    /// each giving its next example in file order, until `n` are chosen (a class that runs out
    /// drops out). The chosen examples keep their file order. So the first `n` images of a
    /// class-sorted folder are not all one class (`--limit`, `--limit-train`, `--limit-test`).
    pub fn balanced(self, n: usize) -> Dataset {
        if n >= self.len() {
            return self;
        }
        let classes = self.classes.len().max(1);
        let mut by_class: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize % classes].push_back(i);
        }
        let mut chosen = Vec::with_capacity(n);
        while chosen.len() < n {
            for queue in by_class.iter_mut() {
                if let Some(i) = queue.pop_front() {
                    if chosen.len() < n {
                        chosen.push(i);
                    }
                }
            }
        }
        chosen.sort_unstable();
        Dataset {
            images: chosen.iter().flat_map(|&i| self.image(i).iter().copied()).collect(),
            labels: chosen.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }
}

/// Train and test splits of one dataset.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}
