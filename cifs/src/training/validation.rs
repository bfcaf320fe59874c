//! Model selection on held-out training images (`--val-split N`): N training images,
//! class-balanced and chosen by the seed, taken out of the training set before anything else
//! (`--limit-train` then applies to the rest), never trained on, evaluated after each epoch with
//! natural and PGD-20 accuracy; `best.safetensors` is the model of the best PGD-20 accuracy on
//! them. Without the flag the run does what the reference does: the best PGD-20 accuracy on the
//! evaluation's test images chooses it (which robust-overfitting work counts as selecting on
//! the test set). `config.json` records the split (`val_split`, and the chosen images by their
//! index in the training split) and which images chose the best model.

use datasets::Dataset;
use engine::Rng;

use crate::training::config::TrainConfig;

/// Keys the split's shuffle apart from the model's initialisation, which draws from the seed
/// itself.
const SPLIT_KEY: u64 = 0x5641_4C5F_5350_4C54;

/// The indices (sorted, into `train`) of the `n` held-out images of a run seeded `seed`: the
/// split's images in an order shuffled by the seed, then the classes in turn
/// ([`Dataset::held_out`]).
pub fn held_out(train: &Dataset, n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..train.len()).collect();
    Rng::new(seed ^ SPLIT_KEY).shuffle(&mut order);
    train.held_out(n, &order)
}

/// `train` split into the images a run seeded `seed` trains on and its `n` held-out images,
/// with their indices in `train` (sorted).
pub fn split_off(train: Dataset, n: usize, seed: u64) -> (Dataset, Dataset, Vec<usize>) {
    let indices = held_out(&train, n, seed);
    (train.without(&indices), train.subset(&indices), indices)
}

/// The images that choose `best.safetensors`, in words (config.json and the log).
pub fn best_chosen_on(cfg: &TrainConfig, val_images: usize, test_images: usize) -> String {
    match cfg.val_split {
        Some(_) => format!("PGD-20 accuracy on {val_images} held-out training images (--val-split)"),
        None => {
            format!("PGD-20 accuracy on {test_images} test images, as the reference does (--val-split N holds out training images instead)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datasets::ImageShape;

    /// 30 images of 3 classes, class-sorted as a folder reads (10 each), each image's bytes its
    /// own index so that an image is recognisable wherever it lands.
    fn folder() -> Dataset {
        let per = ImageShape::RGB32.bytes();
        Dataset {
            images: (0..30u8).flat_map(|i| vec![i; per]).collect(),
            labels: (0..30).map(|i| (i / 10) as u8).collect(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            shape: ImageShape::RGB32,
        }
    }

    fn ids(d: &Dataset) -> Vec<u8> {
        (0..d.len()).map(|i| d.image(i)[0]).collect()
    }

    #[test]
    fn the_split_is_class_balanced_disjoint_from_training_and_fixed_by_the_seed() {
        let (rest, val, indices) = split_off(folder(), 7, 5);
        assert_eq!((rest.len(), val.len(), indices.len()), (23, 7, 7));
        let counts: Vec<usize> = (0..3u8).map(|c| val.labels.iter().filter(|&&l| l == c).count()).collect();
        assert!(counts.iter().all(|&k| k == 2 || k == 3) && counts.iter().sum::<usize>() == 7, "class-balanced: {counts:?}");
        let (train_ids, val_ids) = (ids(&rest), ids(&val));
        assert!(val_ids.iter().all(|v| !train_ids.contains(v)), "held out {val_ids:?}, trained on {train_ids:?}");
        assert_eq!(val_ids, indices.iter().map(|&i| i as u8).collect::<Vec<_>>(), "the indices name the held-out images");
        let mut all = [train_ids.clone(), val_ids.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<u8>>(), "nothing lost");
        assert!(val.labels.iter().zip(&val_ids).all(|(&l, &id)| l == id / 10), "labels travel with their images");
        // The seed chooses: the same again, another with another seed, not the file's first images.
        assert_eq!(split_off(folder(), 7, 5).2, indices);
        assert_ne!(split_off(folder(), 7, 6).2, indices);
        assert_ne!(indices, [0, 1, 2, 10, 11, 20, 21]);
    }
}
