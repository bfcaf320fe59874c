//! Evaluation sharded over the ranks: each rank attacks a contiguous part of the test images
//! (each image keeps its index in the whole set, which seeds APGD's and Square's draws), and the
//! per-class counts are summed, so every rank returns the table one process would.

use std::sync::Arc;

use datasets::Dataset;
use engine::Runtime;

use crate::attacks::attack::{Attack, EvalSettings};
use crate::attacks::evaluate::{evaluate_from, AttackResult};
use crate::distributed::collective::Collective;
use crate::distributed::shard::{share, take_images};
use crate::error::Result;
use crate::models::Model;

/// `attacks::evaluate::evaluate` over every image of `data`, this rank taking its share. `on_batch(done,
/// total)` reports this rank's progress scaled to the whole set.
pub fn evaluate(
    rt: &Runtime,
    coll: &dyn Collective,
    model: &Model,
    data: &Arc<Dataset>,
    attacks: &[Arc<dyn Attack>],
    s: EvalSettings,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<AttackResult>> {
    // Fewer images than ranks would leave a rank without any: then every rank evaluates them
    // all (a handful; the same seeds give every rank the same table) and nothing is exchanged.
    if coll.size() == 1 || data.len() < coll.size() {
        return evaluate_from(rt, model, data, 0, attacks, s, on_batch);
    }
    let mine = share(data.len(), coll.rank(), coll.size());
    let (first, n, total) = (mine.start, mine.len(), data.len());
    let part = Arc::new(take_images(data, mine));
    let mut results = evaluate_from(rt, model, &part, first, attacks, s, |d, _| on_batch(d * total / n.max(1), total))?;
    // Correct answers of every row and class, then the images of every class.
    let mut counts: Vec<u64> = results.iter().flat_map(|r| r.per_class.iter().map(|c| c.correct as u64)).collect();
    let classes = data.classes.len();
    let mut images = vec![0u64; classes];
    for &l in &part.labels {
        images[l as usize] += 1;
    }
    counts.extend(&images);
    coll.all_reduce_sum_u64(&mut counts);
    let ratio = |c: u64, n: u64| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let images = &counts[results.len() * classes..];
    for (row, r) in results.iter_mut().enumerate() {
        for (k, c) in r.per_class.iter_mut().enumerate() {
            c.correct = counts[row * classes + k] as usize;
            c.images = images[k] as usize;
            c.accuracy = ratio(counts[row * classes + k], images[k]);
        }
        r.correct = r.per_class.iter().map(|c| c.correct).sum();
        r.images = total;
        r.accuracy = ratio(r.correct as u64, total as u64);
    }
    Ok(results)
}
