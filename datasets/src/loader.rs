//! Batches for one pass over a split, prepared on a background thread (shuffling, augmentation,
//! conversion to floats) so the GPU never waits on the CPU work. The order and the augmentation
//! depend only on the seed given, so an epoch can be replayed exactly (resume).

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::augment::{crop_flip, to_float};
use crate::dataset::{Dataset, IMAGE_BYTES};
use crate::rng::Rng;

/// One batch: images (n, 3, 32, 32) as floats in [0, 1], labels (n,).
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
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
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub batch_size: usize,
    /// Shuffle the order and augment (crop + flip) with this seed; `None`: in order, as is.
    pub train_seed: Option<u64>,
}

/// Iterator over the batches of one pass; the last batch may be smaller (as PyTorch's default).
pub struct Batches {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
    pub count: usize,
}

impl Iterator for Batches {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
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
pub fn batches(data: Arc<Dataset>, pass: Pass) -> Batches {
    let n = data.len();
    let bs = pass.batch_size.max(1);
    let count = n.div_ceil(bs);
    let (tx, rx) = sync_channel(4);
    let handle = std::thread::spawn(move || {
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = pass.train_seed.map(Rng::new);
        if let Some(r) = rng.as_mut() {
            r.shuffle(&mut order);
        }
        for chunk in order.chunks(bs) {
            let mut images = vec![0f32; chunk.len() * IMAGE_BYTES];
            for (k, &i) in chunk.iter().enumerate() {
                let out = &mut images[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES];
                match rng.as_mut() {
                    Some(r) => crop_flip(data.image(i), out, r),
                    None => to_float(data.image(i), out),
                }
            }
            let labels = chunk.iter().map(|&i| data.labels[i] as u32).collect();
            if tx.send(Batch { images, labels }).is_err() {
                return;
            }
        }
    });
    Batches { rx, handle: Some(handle), count }
}
