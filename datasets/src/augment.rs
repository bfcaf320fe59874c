//! Training augmentation, as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip:
//! pad with 4 zero pixels, take a random 32x32 window, flip left-right with probability 1/2.

use crate::dataset::SIDE;
use crate::rng::Rng;

pub const PAD: usize = 4;

/// Writes the augmented image (CHW bytes) into `out` as floats in [0, 1].
pub fn crop_flip(img: &[u8], out: &mut [f32], rng: &mut Rng) {
    let dy = rng.below(2 * PAD as u64 + 1) as isize - PAD as isize;
    let dx = rng.below(2 * PAD as u64 + 1) as isize - PAD as isize;
    let flip = rng.below(2) == 1;
    let s = SIDE as isize;
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                let sx = if flip { s - 1 - x } else { x } + dx;
                let sy = y + dy;
                let v = if (0..s).contains(&sx) && (0..s).contains(&sy) { img[c * SIDE * SIDE + (sy * s + sx) as usize] as f32 / 255.0 } else { 0.0 };
                out[c * SIDE * SIDE + (y * s + x) as usize] = v;
            }
        }
    }
}

/// Plain conversion to floats in [0, 1] (evaluation).
pub fn to_float(img: &[u8], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(img) {
        *o = *v as f32 / 255.0;
    }
}
