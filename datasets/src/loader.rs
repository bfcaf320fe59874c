//! Batches for one pass over a split, prepared on a background thread (augmentation, conversion
//! to floats) so the GPU never waits on the CPU work. Which examples, in which order, and how
//! each is cropped are given by the caller ([`Pass`]), so a pass replays exactly (resume).
//!
//! A pass always ends with every batch it promised or with an error: if the producer thread
//! dies (a panic on bad data), the consumer gets [`DatasetError::LoaderFailed`] instead of an
//! epoch that silently ends early.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::augment::{crop_flip, to_float, Crop};
use crate::dataset::{Dataset, ImageShape};
use crate::error::{DatasetError, Result};

/// One batch: images (n, channels, side, side) as floats in [0, 1], labels (n,).
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub shape: ImageShape,
}

impl Batch {
    /// The images' tensor shape: (n, channels, side, side).
    pub fn dims(&self) -> [usize; 4] {
        [self.len(), self.shape.channels, self.shape.side, self.shape.side]
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// How one pass draws its batches.
#[derive(Debug, Clone)]
pub struct Pass {
    pub batch_size: usize,
    /// Indices of the examples served, in order (a shuffle, a subset, or all in order).
    pub order: Vec<usize>,
    /// The augmentation of each served example (same length as `order`); `None`: as is.
    pub crops: Option<Vec<Crop>>,
}

impl Pass {
    /// Every example of a split of `n`, in order, unaugmented (evaluation).
    pub fn in_order(n: usize, batch_size: usize) -> Pass {
        Pass { batch_size, order: (0..n).collect(), crops: None }
    }
}

/// Iterator over the batches of one pass; the last batch may be smaller (as PyTorch's default).
pub struct Batches {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
    pub count: usize,
    served: usize,
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if let Ok(b) = self.rx.recv() {
            self.served += 1;
            return Some(Ok(b));
        }
        // The channel closed: either every batch was served, or the producer died.
        let handle = self.handle.take()?;
        let reason = match handle.join() {
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
            Ok(()) if self.served == self.count => return None,
            Ok(()) => "the producer stopped early".into(),
        };
        Some(Err(DatasetError::LoaderFailed { served: self.served, expected: self.count, reason }))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Unblock the producer (it stops when its channel closes), then reap it.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts producing the batches of one pass over `data`.
pub fn batches(data: Arc<Dataset>, pass: Pass) -> Result<Batches> {
    let bs = pass.batch_size.max(1);
    if let Some(i) = pass.order.iter().find(|&&i| i >= data.len()) {
        return Err(DatasetError::Invalid(format!("example {i} requested from a split of {}", data.len())));
    }
    if pass.crops.as_ref().is_some_and(|c| c.len() != pass.order.len()) {
        return Err(DatasetError::Invalid("one crop per served example is needed".into()));
    }
    let count = pass.order.len().div_ceil(bs);
    let (tx, rx) = sync_channel(4);
    let handle = std::thread::spawn(move || {
        let (shape, bytes) = (data.shape, data.shape.bytes());
        for (b, chunk) in pass.order.chunks(bs).enumerate() {
            let mut images = vec![0f32; chunk.len() * bytes];
            for (k, &i) in chunk.iter().enumerate() {
                let out = &mut images[k * bytes..(k + 1) * bytes];
                match &pass.crops {
                    Some(crops) => crop_flip(data.image(i), out, crops[b * bs + k], shape),
                    None => to_float(data.image(i), out),
                }
            }
            let labels = chunk.iter().map(|&i| data.labels[i] as u32).collect();
            if tx.send(Batch { images, labels, shape }).is_err() {
                return;
            }
        }
    });
    Ok(Batches { rx, handle: Some(handle), count, served: 0 })
}
