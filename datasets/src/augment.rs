//! Training augmentation, as torchvision's RandomCrop(side, padding=4) + RandomHorizontalFlip:
//! pad with 4 zero pixels, take a window of the image's size, flip left-right. The caller draws each image's
//! [`Crop`] (this crate holds no random generator), so the same draws replay the same batches.

use crate::dataset::ImageShape;

pub const PAD: usize = 4;

/// Where one image's window sits in the padded image, and whether it is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// Shift of the window in [-PAD, PAD], rows and columns.
    pub dy: i8,
    pub dx: i8,
    pub flip: bool,
}

impl Crop {
    /// The crop a draw of three uniform integers gives: `dy_draw`, `dx_draw` in [0, 2 PAD],
    /// `flip_draw` in {0, 1}.
    pub fn from_draws(dy_draw: u64, dx_draw: u64, flip_draw: u64) -> Crop {
        let shift = |d: u64| (d.min(2 * PAD as u64) as i64 - PAD as i64) as i8;
        Crop { dy: shift(dy_draw), dx: shift(dx_draw), flip: flip_draw == 1 }
    }
}

/// Writes the augmented image (CHW bytes of `shape`) into `out` as floats in [0, 1].
pub fn crop_flip(img: &[u8], out: &mut [f32], crop: Crop, shape: ImageShape) {
    let (dy, dx) = (crop.dy as isize, crop.dx as isize);
    let s = shape.side as isize;
    let plane = shape.side * shape.side;
    for c in 0..shape.channels {
        for y in 0..s {
            for x in 0..s {
                let sx = if crop.flip { s - 1 - x } else { x } + dx;
                let sy = y + dy;
                let v =
                    if (0..s).contains(&sx) && (0..s).contains(&sy) { img[c * plane + (sy * s + sx) as usize] as f32 / 255.0 } else { 0.0 };
                out[c * plane + (y * s + x) as usize] = v;
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
