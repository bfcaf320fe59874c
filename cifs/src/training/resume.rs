//! What `--resume` may change. A run's settings live in its `config.json`; continuing it under
//! other settings would make a run that is neither the old one nor the new one, so a resume with
//! changed settings is refused with the list of changes, unless every change is safe (it moves
//! only where the run stops or how it is evaluated) or the caller allows changes explicitly.
//! Accepted changes are recorded in `config.json`'s `history`, so the file says which settings
//! each epoch ran under instead of being silently overwritten.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::distributed::{DistributedError, Parallel};
use crate::error::{io, CifsError, Result};
use crate::training::config::TrainConfig;

/// How a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A new run (the output directory's files are replaced).
    No,
    /// Continue from `last.safetensors` under the same settings (safe changes allowed).
    Same,
    /// Continue under whatever settings are given; every change is recorded.
    AllowChanges,
}

/// Settings a resumed run may change freely (by their `config.json` names): `epochs` only moves
/// where the run stops (the lr milestones count from the main phase's start, so epochs already
/// run keep their schedule); `eval_every`, `eval_limit` and `limit_test` only choose when and on
/// which test images the run is evaluated (evaluation runs in eval mode and draws nothing from
/// the training generators, so the weights do not depend on them).
pub const SAFE_TO_CHANGE: [&str; 4] = ["epochs", "eval_every", "eval_limit", "limit_test"];

/// One setting's value before and after a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub from: Value,
    pub to: Value,
}

/// The changes accepted when the run was resumed after `epoch` completed epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumption {
    pub epoch: usize,
    pub changed: BTreeMap<String, Change>,
}

/// The contents of `config.json`: the settings the run continues under, and the changes made at
/// each resume (absent while there were none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub config: TrainConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Resumption>,
    /// The processes (ranks) that train the run, data-parallel; runs recorded before there was
    /// a choice ran as one.
    #[serde(default = "one")]
    pub ranks: usize,
    /// Batch-norm statistics summed over the ranks (`--sync-bn`); written only when on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_bn: bool,
    /// Which images choose `best.safetensors`, in words (`training::validation`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub best_chosen_on: String,
    /// With `val_split`: the held-out images, by their index in the training split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_images: Vec<usize>,
}

fn one() -> usize {
    1
}

impl RunRecord {
    pub fn new(config: TrainConfig) -> RunRecord {
        RunRecord { config, history: Vec::new(), ranks: 1, sync_bn: false, best_chosen_on: String::new(), validation_images: Vec::new() }
    }

    pub fn read(path: &Path) -> Result<RunRecord> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|e| CifsError::Invalid(format!("{}: not a run's config.json ({e})", path.display())))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the run record serialises")
    }
}

/// The settings that differ between `old` and `new`, by their `config.json` names.
pub fn changes(old: &TrainConfig, new: &TrainConfig) -> BTreeMap<String, Change> {
    // Through the JSON text, so that an f32 compares and prints as config.json writes it
    // (0.1, not the 0.10000000149011612 of its f64 widening).
    let as_map = |c: &TrainConfig| match serde_json::from_str::<Value>(&serde_json::to_string(c).expect("the config serialises"))
        .expect("JSON reads back")
    {
        Value::Object(m) => m,
        _ => unreachable!("a struct serialises to an object"),
    };
    let (old, new) = (as_map(old), as_map(new));
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (from, to) = (old.get(name).cloned().unwrap_or(Value::Null), new.get(name).cloned().unwrap_or(Value::Null));
            (from != to).then(|| (name.clone(), Change { from, to }))
        })
        .collect()
}

/// The record a run resumed after `epoch` completed epochs continues with: `old`'s history, then
/// the changes `new` makes, if any. Refuses changes outside [`SAFE_TO_CHANGE`] unless `resume`
/// allows them, naming each with its old and new value. `init_from` matters only when a run
/// starts: left out on resume, the old value is kept.
pub fn resumed(old: RunRecord, new: &TrainConfig, epoch: usize, resume: Resume) -> Result<RunRecord> {
    let mut config = new.clone();
    if config.init_from.is_none() {
        config.init_from = old.config.init_from.clone();
    }
    let changed = changes(&old.config, &config);
    let refused: Vec<String> = changed
        .iter()
        .filter(|(name, _)| !SAFE_TO_CHANGE.contains(&name.as_str()))
        .map(|(name, c)| format!("{name} {} -> {}", c.from, c.to))
        .collect();
    if !refused.is_empty() && resume != Resume::AllowChanges {
        return Err(CifsError::ChangedSettings { changes: refused.join(", ") });
    }
    let mut history = old.history;
    if !changed.is_empty() {
        history.push(Resumption { epoch, changed });
    }
    Ok(RunRecord { config, history, ..old })
}

/// On resume: the run recorded in `old` (read from `out`'s `config.json`) must have been trained
/// with as many ranks as this launch has and the same `--sync-bn`: the per-rank batch-norm
/// statistics make the result depend on both.
pub fn check_ranks(old: &RunRecord, out: &Path, par: &Parallel) -> Result<()> {
    let out = out.display().to_string();
    if old.ranks != par.coll.size() {
        return Err(DistributedError::RanksDiffer { out, trained: old.ranks, now: par.coll.size() }.into());
    }
    if old.sync_bn != par.sync_bn {
        let word = |on: bool| if on { "with" } else { "without" };
        return Err(DistributedError::SyncBnDiffers { out, trained: word(old.sync_bn), now: word(par.sync_bn) }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::config::Settings;
    use crate::training::recipe::Recipe;
    use engine::{GemmKernels, Precision};

    fn config() -> TrainConfig {
        let settings = Settings { width: Some(8), batch_size: 16, eval_limit: 6, seed: 3, ..Settings::DEFAULT };
        let recipe = Recipe { epochs: 2, clean_epochs: 1, milestones: vec![1], attack_steps: 2, ..Recipe::cifar10() };
        TrainConfig::new("folder", "data", recipe, settings, Precision::F32, GemmKernels::Simt)
    }

    #[test]
    fn a_changed_rate_is_refused_with_its_old_and_new_value() {
        let old = RunRecord::new(config());
        let new = TrainConfig { lr: 0.5, batch_size: 32, ..config() };
        let e = resumed(old.clone(), &new, 1, Resume::Same).unwrap_err().to_string();
        assert!(e.contains("lr 0.1 -> 0.5") && e.contains("batch_size 16 -> 32"), "{e}");
        // Allowed explicitly: continued under the new settings, the change on record.
        let r = resumed(old, &new, 1, Resume::AllowChanges).unwrap();
        assert_eq!(r.config, new);
        assert_eq!(r.history.len(), 1);
        assert_eq!(r.history[0].epoch, 1);
        assert_eq!(r.history[0].changed.keys().collect::<Vec<_>>(), ["batch_size", "lr"]);
        assert_eq!(r.history[0].changed["batch_size"], Change { from: 16.into(), to: 32.into() });
    }

    #[test]
    fn safe_changes_are_accepted_and_recorded_and_no_change_records_nothing() {
        let old = RunRecord::new(config());
        assert_eq!(resumed(old.clone(), &config(), 2, Resume::Same).unwrap(), old);
        let more = TrainConfig { epochs: 5, eval_every: 2, eval_limit: 100, limit_test: Some(50), ..config() };
        let r = resumed(old, &more, 2, Resume::Same).unwrap();
        assert_eq!(r.config, more);
        assert_eq!(r.history[0].changed.keys().collect::<Vec<_>>(), SAFE_TO_CHANGE, "all four, in name order");
        // A second resume appends to the history.
        let r = resumed(r, &TrainConfig { epochs: 6, ..more }, 5, Resume::Same).unwrap();
        assert_eq!(
            r.history.iter().map(|h| (h.epoch, h.changed["epochs"].to.clone())).collect::<Vec<_>>(),
            [(2, Value::from(5)), (5, Value::from(6))]
        );
    }

    #[test]
    fn init_from_left_out_on_resume_keeps_the_old_one() {
        let old = RunRecord::new(TrainConfig { init_from: Some("w.safetensors".into()), ..config() });
        let r = resumed(old.clone(), &config(), 1, Resume::Same).unwrap();
        assert_eq!((r.config.init_from.as_deref(), r.history.len()), (Some("w.safetensors"), 0));
        let other = TrainConfig { init_from: Some("v.safetensors".into()), ..config() };
        assert!(resumed(old, &other, 1, Resume::Same).unwrap_err().to_string().contains("init_from"));
    }

    #[test]
    fn the_record_reads_back_with_its_history_and_without_one() {
        let r = resumed(RunRecord::new(config()), &TrainConfig { epochs: 4, ..config() }, 3, Resume::Same).unwrap();
        let json = r.to_json();
        assert_eq!(serde_json::from_str::<RunRecord>(&json).unwrap(), r);
        // A config.json written before histories and ranks existed is the bare settings: one
        // process, per-rank batch norm.
        let bare = serde_json::to_string(&config()).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&bare).unwrap(), RunRecord::new(config()));
        // The ranks always written, sync_bn only when on; both kept by a resume.
        let two = RunRecord { ranks: 2, sync_bn: true, ..RunRecord::new(config()) };
        let json: Value = serde_json::from_str(&two.to_json()).unwrap();
        assert_eq!((json["ranks"].as_u64(), json["sync_bn"].as_bool()), (Some(2), Some(true)));
        assert!(serde_json::from_str::<Value>(&RunRecord::new(config()).to_json()).unwrap().get("sync_bn").is_none());
        let r = resumed(two, &TrainConfig { epochs: 4, ..config() }, 3, Resume::Same).unwrap();
        assert_eq!((r.ranks, r.sync_bn), (2, true));
    }
}
