//! Per-image loss values and predictions computed on the host from read-back logits: what the
//! checkpoint logic of APGD and the acceptance test of Square compare. (The gradients of the same
//! losses are computed on the GPU by the engine's ops.)

use crate::attacks::loss::AttackLoss;

/// Index of the largest logit of each row (ties: the lower index).
pub fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits.chunks(classes).map(|r| r.iter().enumerate().fold(0, |best, (j, x)| if *x > r[best] { j } else { best })).collect()
}

fn ce_row(row: &[f32], y: usize) -> f64 {
    let mx = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
    lse - row[y] as f64
}

/// `z_y - max_{j != y} z_j` of each row: positive while the image is classified correctly.
pub fn margins(logits: &[f32], labels: &[u32], classes: usize) -> Vec<f64> {
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let other = row.iter().enumerate().filter(|(j, _)| *j != y as usize).fold(f64::NEG_INFINITY, |m, (_, &v)| m.max(v as f64));
            row[y as usize] as f64 - other
        })
        .collect()
}

/// Classes of a row sorted by logit, largest first (ties: lower index first).
fn sorted_desc(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx
}

/// DLR loss of each row, untargeted or towards `targets` (see `engine::ops::dlr_loss`).
pub fn dlr(logits: &[f32], labels: &[u32], targets: Option<&[u32]>, classes: usize) -> Vec<f64> {
    logits
        .chunks(classes)
        .enumerate()
        .map(|(r, row)| {
            let s = sorted_desc(row);
            let z = |j: usize| row[j] as f64;
            let y = labels[r] as usize;
            let (other, d) = match targets {
                Some(t) => (t[r] as usize, z(s[0]) - 0.5 * (z(s[2]) + z(s[3])) + 1e-12),
                None => (if s[0] == y { s[1] } else { s[0] }, z(s[0]) - z(s[2]) + 1e-12),
            };
            -(z(y) - z(other)) / d
        })
        .collect()
}

/// Each image's value of `loss` (the joint loss without its positive 3 / (beta + 1) factor, as
/// the reference's AutoAttack evaluation writes it; a positive factor changes no comparison).
pub fn per_image(loss: AttackLoss, logits: &[f32], probes: &[Vec<f32>], labels: &[u32], classes: usize) -> Vec<f64> {
    let ce = |l: &[f32]| -> Vec<f64> { l.chunks(classes).zip(labels).map(|(row, &y)| ce_row(row, y as usize)).collect() };
    match loss {
        AttackLoss::Ce => ce(logits),
        AttackLoss::Joint { beta } => {
            let mut total = ce(logits);
            for p in probes {
                for (t, v) in total.iter_mut().zip(ce(p)) {
                    *t += beta as f64 / probes.len() as f64 * v;
                }
            }
            total
        }
        AttackLoss::CwMargin { confidence } => margins(logits, labels, classes).iter().map(|m| -(m + confidence as f64).max(0.0)).collect(),
        AttackLoss::Dlr => dlr(logits, labels, None, classes),
    }
}
