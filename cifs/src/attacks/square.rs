//! The Square attack, L-inf (Andriushchenko et al., ECCV 2020), as the AutoAttack code runs it: a
//! black-box random search that needs only the model's logits, so gradient masking cannot hide
//! a model's weakness from it.
//!
//! Start: vertical stripes, each image's columns moved by +-eps per channel. Then, for each of
//! `queries` iterations, on the images not yet broken: one square of side
//! `max(round(sqrt(p H W)), 1)` at one random position, shared by the batch, with a +-2 eps change
//! per channel (also shared), clipped to the eps-ball and [0, 1]; the candidate replaces an image's
//! best point when it lowers the margin `z_y - max_{j != y} z_j` or makes it non-positive. The
//! square's share p starts at `p_init` and halves at iterations 10, 50, 200, 500, 1000, 2000,
//! 4000, 6000 and 8000 of a schedule rescaled to 10 000 iterations ([`p_selection`]).
//!
//! Random draws: each image's stripes from a generator of (seed, image), each iteration's square
//! from one of (seed, iteration), so an image's attack does not depend on its batch.

use std::sync::Arc;

use engine::{no_grad, Rng, Runtime, Tensor};

use crate::attacks::attack::{Attack, Batch, EvalSettings, Images};
use crate::attacks::hostloss;
use crate::error::{check_image_fraction, check_setting, Result};
use crate::models::{Mode, Model};

#[derive(Debug, Clone, Copy)]
pub struct Square {
    pub eps: f32,
    pub queries: usize,
    pub p_init: f64,
    pub seed: u64,
}

/// The square's share of the image at iteration `it` of `queries` (AutoAttack's `p_selection`
/// with its schedule rescaled to 10 000 iterations).
pub fn p_selection(p_init: f64, it: usize, queries: usize) -> f64 {
    let it = (it as f64 / queries as f64 * 10000.0) as usize;
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000].iter().filter(|&&b| it > b).count();
    p_init / (1u64 << halvings) as f64
}

/// Side of the square of share `p` in an `h` x `w` image: `max(round(sqrt(p h w)), 1)`, rounding
/// half to even as Python's `round` does.
pub fn side(p: f64, h: usize, w: usize) -> usize {
    ((p * (h * w) as f64).sqrt().round_ties_even() as usize).max(1)
}

fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x1319_8A2E_0370_7344, |h, &p| (h ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31))
}

/// +1 or -1 with equal odds.
fn sign(rng: &mut Rng) -> f32 {
    if rng.below(2) == 1 {
        1.0
    } else {
        -1.0
    }
}

impl Square {
    /// AutoAttack's settings: 5000 queries, p_init 0.8.
    pub fn standard(eps: f32, seed: u64) -> Square {
        Square { eps, queries: 5000, p_init: 0.8, seed }
    }

    /// The evaluation's Square: its radius, queries and seed, p_init 0.8.
    pub fn from_settings(s: &EvalSettings) -> Square {
        Square { eps: s.eps, queries: s.queries, p_init: 0.8, seed: s.seed }
    }

    pub fn validate(&self) -> Result<()> {
        check_image_fraction("eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.queries >= 1, "queries", self.queries, "Square needs at least one query")?;
        check_setting(self.p_init > 0.0 && self.p_init <= 1.0, "p_init", self.p_init, "must be in (0, 1]")
    }

    fn margins(&self, rt: &Runtime, model: &Model, shape: &[usize], images: &[f32], labels: &[u32]) -> Result<Vec<f64>> {
        let x = Tensor::from_f32(rt, shape, images)?;
        let logits = no_grad(|| model.forward(rt, &x, None, Mode::Eval))?.logits.to_vec(rt)?;
        Ok(hostloss::margins(&logits, labels, model.config.classes))
    }

    /// Attacks the images of `b` that `robust` still marks and clears the flags of those it
    /// breaks. Returns the batch's images after the attack: each attacked image's best point
    /// (misclassified where the attack broke it), the clean image for the rest.
    pub fn run(&self, rt: &Runtime, model: &Model, b: &Batch, robust: &mut [bool]) -> Result<Vec<f32>> {
        self.validate()?;
        let mut images = b.x_host.to_vec();
        let live: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
        if live.is_empty() {
            return Ok(images);
        }
        let [_, c, h, w] = <[usize; 4]>::try_from(b.x.shape())
            .map_err(|_| crate::CifsError::InputShape { shape: b.x.shape().to_vec(), expected: "(N, C, H, W) images".into() })?;
        let per = c * h * w;
        let image = |i: usize| &b.x_host[i * per..(i + 1) * per];
        let clip = |v: f32, x0: f32| v.max(x0 - self.eps).min(x0 + self.eps).clamp(0.0, 1.0);
        // Stripes: every column of every channel moved by +-eps.
        let mut best: Vec<Vec<f32>> = live
            .iter()
            .map(|&i| {
                let mut rng = Rng::new(mix(&[self.seed, b.ids[i]]));
                let stripes: Vec<f32> = (0..c * w).map(|_| sign(&mut rng)).collect();
                image(i).iter().enumerate().map(|(k, &x0)| (x0 + self.eps * stripes[(k / (h * w)) * w + k % w]).clamp(0.0, 1.0)).collect()
            })
            .collect();
        let labels: Vec<u32> = live.iter().map(|&i| b.labels_host[i]).collect();
        let mut margin = self.margins(rt, model, &[live.len(), c, h, w], &best.concat(), &labels)?;
        for it in 0..self.queries {
            let todo: Vec<usize> = (0..live.len()).filter(|&k| margin[k] > 0.0).collect();
            if todo.is_empty() {
                break;
            }
            let s = side(p_selection(self.p_init, it, self.queries), h, w);
            let mut rng = Rng::new(mix(&[self.seed, u64::MAX, it as u64]));
            // As AutoAttack's random_int(0, h - s): uniform in [0, h - s), truncated.
            let vh = (rng.next_f64() * (h - s) as f64) as usize;
            let vw = (rng.next_f64() * (w - s) as f64) as usize;
            let change: Vec<f32> = (0..c).map(|_| 2.0 * self.eps * sign(&mut rng)).collect();
            let candidates: Vec<Vec<f32>> = todo
                .iter()
                .map(|&k| {
                    let x0 = image(live[k]);
                    let mut v = best[k].clone();
                    for (ch, d) in change.iter().enumerate() {
                        for y in vh..vh + s {
                            for x in vw..vw + s {
                                let at = (ch * h + y) * w + x;
                                v[at] += d;
                            }
                        }
                    }
                    v.iter().zip(x0).map(|(&a, &x0)| clip(a, x0)).collect()
                })
                .collect();
            let sub_labels: Vec<u32> = todo.iter().map(|&k| labels[k]).collect();
            let new_margin = self.margins(rt, model, &[todo.len(), c, h, w], &candidates.concat(), &sub_labels)?;
            for ((&k, cand), m) in todo.iter().zip(candidates).zip(new_margin) {
                if m < margin[k] || m <= 0.0 {
                    margin[k] = m;
                    best[k] = cand;
                }
            }
        }
        for ((&i, m), img) in live.iter().zip(&margin).zip(best) {
            robust[i] &= *m > 0.0;
            images[i * per..(i + 1) * per].copy_from_slice(&img);
        }
        Ok(images)
    }
}

/// `square` as an evaluation attack: the margin of the final logits, black box.
pub struct SquareAttack;

impl Attack for SquareAttack {
    fn name(&self) -> String {
        "square".into()
    }

    fn loss(&self, _: &EvalSettings) -> String {
        "margin (black box)".into()
    }

    fn validate(&self, s: &EvalSettings) -> Result<()> {
        Square::from_settings(s).validate()
    }

    /// The images it broke; the clean image wherever it did not (its best point there is no
    /// adversarial example).
    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        let before = robust.to_vec();
        let out = Square::from_settings(s).run(rt, model, b, robust)?;
        let mut images = b.x_host.to_vec();
        let per = images.len() / b.ids.len().max(1);
        for (i, (&was, &now)) in before.iter().zip(robust.iter()).enumerate() {
            if was && !now {
                images[i * per..(i + 1) * per].copy_from_slice(&out[i * per..(i + 1) * per]);
            }
        }
        Ok(Images::Host(images))
    }
}

pub fn parse(name: &str) -> Option<Arc<dyn Attack>> {
    (name == "square").then(|| Arc::new(SquareAttack) as Arc<dyn Attack>)
}
