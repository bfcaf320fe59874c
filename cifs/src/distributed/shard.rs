//! Which images each rank takes. A global batch (or the test set) of `n` images is cut into
//! `size` contiguous shares in rank order; the first `n % size` shares have one image more.
//! Every rank prepares the whole global batch exactly as a one-process run does (order, crop,
//! flip) and keeps its share, so the images a rank sees depend only on the run's seed and the
//! number of ranks, and an epoch replays exactly.

use std::ops::Range;

use datasets::loader::Batch;
use datasets::Dataset;
use engine::ops::index::gather_rows;
use engine::ops::random::uniform;
use engine::{Runtime, Tensor};

use crate::distributed::collective::{Collective, DistributedError};

/// The images `rank` of `size` takes from `n`: a contiguous range; together the ranges cover
/// `0..n` in rank order.
pub fn share(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Refuses a training set of `len` images in batches of `batch` if some batch would leave a rank
/// without an image (a rank with nothing to backpropagate has no gradient to contribute).
pub fn check_batches(len: usize, batch: usize, size: usize) -> Result<(), DistributedError> {
    let last = match len % batch {
        0 => batch.min(len),
        r => r,
    };
    if size > 1 && (batch < size || last < size) {
        return Err(DistributedError::BatchTooSmall { batch, ranks: size, last });
    }
    Ok(())
}

/// The part `range` of a global batch.
pub fn take_share(batch: Batch, range: Range<usize>) -> Batch {
    let per = batch.shape.bytes();
    Batch { images: batch.images[range.start * per..range.end * per].to_vec(), labels: batch.labels[range].to_vec(), shape: batch.shape }
}

/// Where a rank's share sits in a global batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Images of the global batch.
    pub global: usize,
    /// This rank's images: `first..first + len` of the global batch.
    pub first: usize,
    pub len: usize,
}

impl Share {
    /// A whole batch of `n` images (one process).
    pub fn whole(n: usize) -> Share {
        Share { global: n, first: 0, len: n }
    }

    pub fn is_whole(&self) -> bool {
        self.len == self.global
    }

    /// This share's images over the global batch's.
    pub fn part(&self) -> f32 {
        self.len as f32 / self.global as f32
    }

    /// The share's rows of a U(-eps, eps) start drawn for the whole global batch from `seed`:
    /// the one-process run draws it for the whole batch (value i a function of the seed and i
    /// alone), so each image starts where it would in one process. `x`: the share's images.
    pub fn uniform_start(&self, rt: &Runtime, x: &Tensor, eps: f32, seed: u64) -> engine::Result<Tensor> {
        let s = x.shape();
        let per = s[1..].iter().product::<usize>();
        let whole = uniform(rt, &[self.global, per], -eps, eps, seed)?;
        let rows: Vec<u32> = (self.first..self.first + self.len).map(|i| i as u32).collect();
        let idx = Tensor::from_u32(rt, &[rows.len()], &rows)?;
        gather_rows(rt, &whole, &idx)?.reshape(s)
    }
}

/// This rank's share of a global batch, and where it sits (one process: the whole batch).
pub fn share_of(batch: Batch, coll: &dyn Collective) -> (Batch, Share) {
    let mine = share(batch.len(), coll.rank(), coll.size());
    let share = Share { global: batch.len(), first: mine.start, len: mine.len() };
    match coll.size() {
        1 => (batch, share),
        _ => (take_share(batch, mine), share),
    }
}

/// The images `range` of a dataset, in order.
pub fn take_images(data: &Dataset, range: Range<usize>) -> Dataset {
    let per = data.shape.bytes();
    Dataset {
        images: data.images[range.start * per..range.end * per].to_vec(),
        labels: data.labels[range].to_vec(),
        classes: data.classes.clone(),
        shape: data.shape,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datasets::ImageShape;

    #[test]
    fn shares_cover_the_batch_in_rank_order_and_differ_by_at_most_one() {
        for n in 0..40 {
            for size in 1..9 {
                let ranges: Vec<_> = (0..size).map(|r| share(n, r, size)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[size - 1].end, n, "n {n} size {size}");
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "n {n} size {size}: not contiguous");
                    assert!(w[0].len() == w[1].len() || w[0].len() == w[1].len() + 1, "n {n} size {size}: {ranges:?}");
                }
            }
        }
        assert_eq!(share(5, 0, 2), 0..3);
        assert_eq!(share(5, 1, 2), 3..5);
    }

    #[test]
    fn a_batch_that_leaves_a_rank_empty_is_refused() {
        assert!(check_batches(12, 5, 2).is_ok()); // 5, 5, 2
        assert!(check_batches(11, 5, 2).is_err()); // 5, 5, 1
        assert!(check_batches(10, 1, 2).is_err());
        assert!(check_batches(1, 5, 1).is_ok());
        let e = check_batches(11, 5, 2).unwrap_err().to_string();
        assert!(e.contains("last batch has 1"), "{e}");
    }

    #[test]
    fn a_share_keeps_its_images_and_labels_together() {
        let shape = ImageShape { channels: 1, side: 2 };
        let images: Vec<f32> = (0..5 * 4).map(|v| v as f32).collect();
        let b = take_share(Batch { images, labels: vec![0, 1, 2, 3, 4], shape }, 3..5);
        assert_eq!(b.labels, [3, 4]);
        assert_eq!(b.images, (12..20).map(|v| v as f32).collect::<Vec<_>>());
        let data = Dataset { images: (0..20).collect(), labels: vec![0, 1, 0, 1, 0], classes: vec!["a".into(), "b".into()], shape };
        let part = take_images(&data, 1..3);
        assert_eq!(part.labels, [1, 0]);
        assert_eq!(part.image(1), &[8, 9, 10, 11]);
    }
}
