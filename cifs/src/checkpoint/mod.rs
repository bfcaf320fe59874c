//! Checkpoint files. A model checkpoint is a safetensors state dict under PyTorch names (readable
//! by the reference code) with our metadata (`arch`, `width`, `classes`); a training checkpoint
//! adds the SGD momentum buffers (`optim.velocity.<name>`) and where the run stands (`epoch`,
//! `best_pgd20`), and with `--ema` the weight average (`ema.<name>`, `ema_updates`, `ema_decay`).
//! The model's shape is read from the tensors themselves, so a checkpoint made by
//! the reference code (no metadata, maybe a `module.` prefix) loads too.

pub mod state;

use std::collections::BTreeMap;
use std::path::Path;

use engine::{Rng, Runtime};

use crate::error::{io, CifsError, Result};
use crate::models::family::TensorShapes;
use crate::models::registry;
use crate::models::{Model, ModelConfig};
use crate::training::ema::WeightAverage;
use crate::training::optim::Sgd;
use state::{load_state_dict, read_f32, to_safetensors, write_atomic, Entry};

/// The state-dict prefix (`""`, or `"module."` for a model saved from PyTorch's DataParallel)
/// and the model the tensors describe: the one family that recognises them
/// (`models::registry`).
pub fn infer_config(bytes: &[u8], path: &Path) -> Result<(String, ModelConfig)> {
    let p = path.display().to_string();
    let st = state::open(bytes, &p)?;
    let shapes = |prefix: &str| {
        let named = st.tensors().into_iter().filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_string(), t.shape().to_vec())));
        TensorShapes(named.collect())
    };
    let plain = registry::recognise(&shapes(""));
    let prefixed = || registry::recognise(&shapes("module."));
    match plain {
        Ok(config) => Ok((String::new(), config)),
        Err(why) => match prefixed() {
            Ok(config) => Ok(("module.".into(), config)),
            Err(_) => Err(CifsError::UnknownModel { path: p, reason: why }),
        },
    }
}

/// Loads a model checkpoint (ours or the reference's) into a new model of the shape it holds.
pub fn load_model(rt: &Runtime, path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (prefix, config) = infer_config(&bytes, path)?;
    let model = Model::new(rt, config, &mut Rng::new(0))?;
    load_state_dict(rt, &model, &bytes, &prefix, &path.display().to_string())?;
    Ok(model)
}

fn ensure_same_model(path: &Path, found: ModelConfig, model: &Model) -> Result<()> {
    if found != model.config {
        return Err(CifsError::WrongModel { path: path.display().to_string(), found: found.describe(), expected: model.config.describe() });
    }
    Ok(())
}

/// Loads a model checkpoint's weights into `model`, which must be of the same architecture and
/// width (`train --init-from`).
pub fn load_weights_into(rt: &Runtime, model: &Model, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (prefix, config) = infer_config(&bytes, path)?;
    ensure_same_model(path, config, model)?;
    load_state_dict(rt, model, &bytes, &prefix, &path.display().to_string())
}

fn model_metadata(model: &Model) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), "cifs-wgpu/1".to_string()),
        ("arch".to_string(), model.config.kind.name().to_string()),
        ("width".to_string(), model.config.width.to_string()),
        ("classes".to_string(), model.config.classes.to_string()),
    ])
}

/// The bytes of a model-only checkpoint with `extra` metadata.
pub fn model_bytes(rt: &Runtime, model: &Model, extra: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut meta = model_metadata(model);
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    to_safetensors(rt, model, Vec::new(), meta)
}

/// Writes a model-only checkpoint atomically.
pub fn save_model(rt: &Runtime, model: &Model, path: &Path, extra: &[(&str, String)]) -> Result<()> {
    write_atomic(path, &model_bytes(rt, model, extra)?).map_err(io(path))
}

/// Where a training run stands at an epoch boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// Epochs completed (clean and adversarial together).
    pub epoch: usize,
    pub best_pgd20: f64,
}

/// Writes model, momentum buffers, run state and the weight average, if any, atomically: the
/// average rides in the same file, so a resumed run never pairs weights and an average of
/// different epochs.
pub fn save_training(rt: &Runtime, model: &Model, sgd: &Sgd, run: &RunState, average: Option<&WeightAverage>, path: &Path) -> Result<()> {
    let mut meta = model_metadata(model);
    meta.insert("epoch".into(), run.epoch.to_string());
    meta.insert("best_pgd20".into(), format!("{}", run.best_pgd20));
    let values = engine::Tensor::read_all(rt, &sgd.velocity.iter().collect::<Vec<_>>())?;
    let mut extra: Vec<Entry> = model
        .params()
        .iter()
        .zip(&sgd.velocity)
        .zip(values)
        .map(|((p, v), values)| Entry { name: format!("optim.velocity.{}", p.name), shape: v.shape().to_vec(), values })
        .collect();
    if let Some(average) = average {
        let (entries, keys) = average.checkpoint_part(rt)?;
        extra.extend(entries);
        meta.extend(keys.map(|(k, v)| (k.to_string(), v)));
    }
    let bytes = to_safetensors(rt, model, extra, meta)?;
    write_atomic(path, &bytes).map_err(io(path))
}

/// Restores model, momentum and run state from a training checkpoint written by `save_training`.
pub fn load_training(rt: &Runtime, model: &Model, sgd: &Sgd, path: &Path) -> Result<RunState> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (_, config) = infer_config(&bytes, path)?;
    ensure_same_model(path, config, model)?;
    let p = path.display().to_string();
    load_state_dict(rt, model, &bytes, "", &p)?;
    let st = state::open(&bytes, &p)?;
    for (param, v) in model.params().iter().zip(&sgd.velocity) {
        let name = format!("optim.velocity.{}", param.name);
        let (shape, data) = read_f32(&st, &name, &p)?;
        if shape != v.shape() {
            return Err(CifsError::TensorShape { path: p.clone(), name, found: shape, expected: v.shape().to_vec() });
        }
        v.write_f32(rt, &data)?;
    }
    let meta = state::metadata(&bytes, &p)?;
    let get = |key: &'static str| -> Result<&String> { meta.get(key).ok_or(CifsError::NotTrainingCheckpoint { path: p.clone(), key }) };
    let bad = |key: &'static str| CifsError::NotTrainingCheckpoint { path: p.clone(), key };
    Ok(RunState {
        epoch: get("epoch")?.parse().map_err(|_| bad("epoch"))?,
        best_pgd20: get("best_pgd20")?.parse().map_err(|_| bad("best_pgd20"))?,
    })
}
