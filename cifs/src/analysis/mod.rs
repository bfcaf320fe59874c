//! The paper's channel analysis as numbers and figures (`cifs-wgpu analyze`).
//!
//! For each class, over its test images, natural and adversarial (under a chosen attack):
//! - the per-channel mean of the features the classifier reads (the last stage's output,
//!   average-pooled: 512 channels at width 64), over channels sorted by their relevance to the
//!   class, the class's row of the final linear layer scaled so that its largest magnitude is 1;
//! - for CIFS models, each CIFS block's mask (mean multiplier per channel) and its output before
//!   the mask;
//! - the share of activation mass on negatively relevant (NR) channels (relevance < 0), with the
//!   mask (the features the classifier reads) and, for CIFS models, without it (the last CIFS
//!   block's output before its mask);
//! - natural and robust accuracy.
//!
//! Means are accumulated in f64 on the host from the read-back per-image values.

pub mod plots;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{no_grad, Runtime, Tensor};

use crate::attacks::attack::{Attack, Batch, EvalSettings};
use crate::attacks::evaluate::adversarial_images;
use crate::attacks::hostloss::predictions;
use crate::error::{io, Result};
use crate::models::{Mode, Model, Taps};

/// Per-channel means of one CIFS block, natural and adversarial.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStats {
    pub name: String,
    pub natural_mask: Vec<f64>,
    pub adversarial_mask: Vec<f64>,
    pub natural_unmasked: Vec<f64>,
    pub adversarial_unmasked: Vec<f64>,
}

/// One class's numbers; channel vectors are in the model's channel order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    pub class: String,
    pub images: usize,
    pub natural_correct: usize,
    pub robust_correct: usize,
    /// The class's row of the final linear layer over its largest magnitude.
    pub relevance: Vec<f64>,
    /// Mean features the classifier reads, natural and adversarial.
    pub natural: Vec<f64>,
    pub adversarial: Vec<f64>,
    pub blocks: Vec<BlockStats>,
}

/// The share of `values`' total on channels whose relevance is negative.
pub fn nr_share(values: &[f64], relevance: &[f64]) -> f64 {
    let total: f64 = values.iter().sum();
    let nr: f64 = values.iter().zip(relevance).filter(|(_, r)| **r < 0.0).map(|(v, _)| v).sum();
    if total == 0.0 {
        0.0
    } else {
        nr / total
    }
}

impl ClassStats {
    /// Channels by descending relevance (ties: lower channel first).
    pub fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.relevance.len()).collect();
        idx.sort_by(|&a, &b| self.relevance[b].total_cmp(&self.relevance[a]).then(a.cmp(&b)));
        idx
    }

    /// NR shares: (natural, adversarial) with the mask, and without it (the last CIFS block's
    /// output before its mask) where the model has one.
    pub fn nr_shares(&self) -> ((f64, f64), Option<(f64, f64)>) {
        let with = (nr_share(&self.natural, &self.relevance), nr_share(&self.adversarial, &self.relevance));
        let without = self
            .blocks
            .last()
            .map(|b| (nr_share(&b.natural_unmasked, &self.relevance), nr_share(&b.adversarial_unmasked, &self.relevance)));
        (with, without)
    }
}

pub struct Analysis {
    /// The attack's name.
    pub attack: String,
    pub classes: Vec<ClassStats>,
}

/// Running sums of one class.
struct Sums {
    images: usize,
    natural_correct: usize,
    robust_correct: usize,
    natural: Vec<f64>,
    adversarial: Vec<f64>,
    /// Per CIFS block: natural mask, adversarial mask, natural unmasked, adversarial unmasked.
    blocks: Vec<[Vec<f64>; 4]>,
}

/// The read-back values of one forward's taps: features, then per block (mask, unmasked).
struct TapValues {
    features: Vec<f32>,
    blocks: Vec<(Vec<f32>, Vec<f32>)>,
    logits: Vec<f32>,
}

fn read(rt: &Runtime, model: &Model, x: &Tensor) -> Result<TapValues> {
    let (out, taps): (_, Taps) = no_grad(|| model.forward_with_taps(rt, x, None, Mode::Eval))?;
    let mut wanted = vec![&out.logits, &taps.features];
    for b in &taps.blocks {
        wanted.extend([&b.mask, &b.pooled]);
    }
    let mut values = Tensor::read_all(rt, &wanted)?.into_iter();
    let (logits, features) = (values.next().expect("logits"), values.next().expect("features"));
    let mut blocks = Vec::new();
    while let (Some(mask), Some(pooled)) = (values.next(), values.next()) {
        blocks.push((mask, pooled));
    }
    Ok(TapValues { features, blocks, logits })
}

/// Of the model's CIFS blocks (in probe order), the positions and names of those whose output has
/// `channels` channels: the ones the classifier-ordered figures can show.
pub fn analysed_blocks(model: &Model, channels: usize) -> (Vec<usize>, Vec<String>) {
    model.probed_blocks().into_iter().enumerate().filter(|(_, b)| b.channels == channels).map(|(k, b)| (k, b.name)).unzip()
}

fn add_row(sum: &mut [f64], values: &[f32], row: usize) {
    let c = sum.len();
    for (s, v) in sum.iter_mut().zip(&values[row * c..(row + 1) * c]) {
        *s += *v as f64;
    }
}

/// Analyses the test images of `data` whose class is in `classes` (indices), under `attack`.
pub fn analyze(
    rt: &Runtime,
    model: &Model,
    data: &Arc<Dataset>,
    classes: &[usize],
    attack: &dyn Attack,
    s: EvalSettings,
    mut progress: impl FnMut(usize, usize),
) -> Result<Analysis> {
    let weights = model.classifier().weight.leaf().to_vec(rt)?;
    let channels = weights.len() / model.config.classes;
    // The figures order channels by the classifier's weights, so they cover the CIFS blocks whose
    // output has the classifier's channels (ResNet-10-CIFS's layer3 probe is left out).
    let (kept, names) = analysed_blocks(model, channels);
    let n_blocks = kept.len();
    let mut sums: Vec<Option<Sums>> = (0..model.config.classes).map(|_| None).collect();
    for &c in classes {
        let zero = vec![0.0; channels];
        sums[c] = Some(Sums {
            images: 0,
            natural_correct: 0,
            robust_correct: 0,
            natural: zero.clone(),
            adversarial: zero.clone(),
            blocks: vec![[zero.clone(), zero.clone(), zero.clone(), zero.clone()]; n_blocks],
        });
    }
    let order: Vec<usize> = (0..data.len()).filter(|&i| sums[data.labels[i] as usize].is_some()).collect();
    let total = order.len();
    let ids_all = order.clone();
    let mut done = 0;
    for batch in batches(data.clone(), Pass { batch_size: s.batch_size, order, crops: None })? {
        let batch = batch?;
        let n = batch.len();
        let x = Tensor::from_f32(rt, &batch.dims(), &batch.images)?;
        let y = Tensor::from_u32(rt, &[n], &batch.labels)?;
        let ids: Vec<u64> = ids_all[done..done + n].iter().map(|&i| i as u64).collect();
        let b = Batch { x: &x, x_host: &batch.images, labels: &y, labels_host: &batch.labels, ids: &ids };
        let natural = read(rt, model, &x)?;
        let adv = adversarial_images(rt, model, &b, attack, &s)?;
        let adversarial = read(rt, model, &adv)?;
        let (pn, pa) = (predictions(&natural.logits, model.config.classes), predictions(&adversarial.logits, model.config.classes));
        for (row, &label) in batch.labels.iter().enumerate() {
            let sum = sums[label as usize].as_mut().expect("only the chosen classes are served");
            sum.images += 1;
            sum.natural_correct += (pn[row] == label as usize) as usize;
            sum.robust_correct += (pa[row] == label as usize) as usize;
            add_row(&mut sum.natural, &natural.features, row);
            add_row(&mut sum.adversarial, &adversarial.features, row);
            for (&k, block) in kept.iter().zip(sum.blocks.iter_mut()) {
                add_row(&mut block[0], &natural.blocks[k].0, row);
                add_row(&mut block[1], &adversarial.blocks[k].0, row);
                add_row(&mut block[2], &natural.blocks[k].1, row);
                add_row(&mut block[3], &adversarial.blocks[k].1, row);
            }
        }
        done += n;
        progress(done, total);
    }
    let mean = |v: &[f64], n: usize| v.iter().map(|x| x / n.max(1) as f64).collect::<Vec<f64>>();
    let stats = classes
        .iter()
        .map(|&c| {
            let s = sums[c].as_ref().expect("chosen");
            let row: Vec<f64> = weights[c * channels..(c + 1) * channels].iter().map(|&w| w as f64).collect();
            let scale = row.iter().fold(0f64, |m, w| m.max(w.abs()));
            ClassStats {
                class: data.classes[c].clone(),
                images: s.images,
                natural_correct: s.natural_correct,
                robust_correct: s.robust_correct,
                relevance: row.iter().map(|w| if scale > 0.0 { w / scale } else { 0.0 }).collect(),
                natural: mean(&s.natural, s.images),
                adversarial: mean(&s.adversarial, s.images),
                blocks: s
                    .blocks
                    .iter()
                    .zip(&names)
                    .map(|(b, name)| BlockStats {
                        name: name.clone(),
                        natural_mask: mean(&b[0], s.images),
                        adversarial_mask: mean(&b[1], s.images),
                        natural_unmasked: mean(&b[2], s.images),
                        adversarial_unmasked: mean(&b[3], s.images),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Analysis { attack: attack.name(), classes: stats })
}

/// `natural` and `adversarial` in the sorted order, scaled to [0, 1] by their common maximum.
fn normalised(order: &[usize], natural: &[f64], adversarial: &[f64]) -> (Vec<f64>, Vec<f64>, f64) {
    let max = natural.iter().chain(adversarial).fold(0f64, |m, v| m.max(v.abs()));
    let scale = |v: &[f64]| order.iter().map(|&c| if max > 0.0 { v[c] / max } else { 0.0 }).collect::<Vec<f64>>();
    (scale(natural), scale(adversarial), max)
}

/// One channel figure (SVG, PNG) and its CSV (one row per channel, in sorted order).
fn channel_files(
    dir: &Path,
    stem: &str,
    title: String,
    quantity: &str,
    stats: &ClassStats,
    natural: &[f64],
    adversarial: &[f64],
) -> Result<Vec<PathBuf>> {
    let order = stats.order();
    let (nat, adv, max) = normalised(&order, natural, adversarial);
    let relevance: Vec<f64> = order.iter().map(|&c| stats.relevance[c]).collect();
    let (svg, png) = plots::save(
        &plots::Channels {
            title,
            quantity: format!("{quantity} / max ({max:.2e})"),
            natural: &nat,
            adversarial: &adv,
            relevance: &relevance,
        },
        &dir.join(stem),
    )?;
    let mut csv = String::from("rank,channel,relevance,natural,adversarial,natural_normalised,adversarial_normalised\n");
    for (rank, &c) in order.iter().enumerate() {
        csv += &format!("{rank},{c},{},{},{},{},{}\n", stats.relevance[c], natural[c], adversarial[c], nat[rank], adv[rank]);
    }
    let csv_path = dir.join(stem).with_extension("csv");
    crate::checkpoint::state::write_atomic(&csv_path, csv.as_bytes()).map_err(io(&csv_path))?;
    Ok(vec![svg, png, csv_path])
}

/// A file-system-safe version of a class name.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Writes every figure and table of `analysis` under `out`; returns the files written.
pub fn write(analysis: &Analysis, out: &Path, model_name: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let attack = analysis.attack.clone();
    let mut files = Vec::new();
    let mut summary = String::from("class,images,natural_acc,robust_acc,nr_share_natural,nr_share_adversarial,nr_share_natural_unmasked,nr_share_adversarial_unmasked\n");
    for s in &analysis.classes {
        let dir = out.join(slug(&s.class));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let title = format!("{model_name}: class {}, {} images, natural vs {attack}", s.class, s.images);
        files.extend(channel_files(&dir, "channels", title, "mean activation", s, &s.natural, &s.adversarial)?);
        for b in &s.blocks {
            let title = format!("{model_name} {} mask: class {}, natural vs {attack}", b.name, s.class);
            files.extend(channel_files(
                &dir,
                &format!("mask-{}", b.name.replace('.', "-")),
                title,
                "mean mask",
                s,
                &b.natural_mask,
                &b.adversarial_mask,
            )?);
        }
        let ((nat, adv), without) = s.nr_shares();
        let (un, ua) = without.map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or_default();
        let acc = |c: usize| c as f64 / s.images.max(1) as f64;
        summary += &format!("{},{},{},{},{nat},{adv},{un},{ua}\n", s.class, s.images, acc(s.natural_correct), acc(s.robust_correct));
    }
    let summary_path = out.join("summary.csv");
    crate::checkpoint::state::write_atomic(&summary_path, summary.as_bytes()).map_err(io(&summary_path))?;
    files.push(summary_path);
    let names: Vec<String> = analysis.classes.iter().map(|s| s.class.clone()).collect();
    let acc =
        |f: &dyn Fn(&ClassStats) -> usize| analysis.classes.iter().map(|s| f(s) as f64 / s.images.max(1) as f64).collect::<Vec<f64>>();
    let (natural, robust) = (acc(&|s| s.natural_correct), acc(&|s| s.robust_correct));
    let bars = plots::ClassBars {
        title: format!("{model_name}: accuracy per class"),
        classes: &names,
        natural: &natural,
        robust: &robust,
        robust_label: attack,
    };
    let (svg, png) = plots::save(&bars, &out.join("accuracy"))?;
    files.extend([svg, png]);
    Ok(files)
}
