//! Checkpoint files. A model checkpoint is a safetensors state dict under PyTorch names (readable
//! by the reference code) with our metadata (`arch`, `width`, `classes`); a training checkpoint
//! adds the SGD momentum buffers (`optim.velocity.<name>`) and where the run stands (`epoch`,
//! `best_pgd20`). The model's shape is read from the tensors themselves, so a checkpoint made by
//! the reference code (no metadata, maybe a `module.` prefix) loads too.

use std::collections::HashMap;
use std::path::Path;

use datasets::Rng;
use engine::Gpu;
use safetensors::SafeTensors;

use crate::error::{CifsError, Result};
use crate::optim::Sgd;
use crate::resnet::{Arch, ModelConfig, ResNet18};
use crate::state::{load_state_dict, read_f32, to_safetensors, to_safetensors_with, write_atomic};

fn err(path: &Path, reason: impl Into<String>) -> CifsError {
    CifsError::Checkpoint { path: path.display().to_string(), reason: reason.into() }
}

/// The state-dict prefix (`""` or `"module."`) and the model the tensors describe.
pub fn infer_config(bytes: &[u8], path: &Path) -> Result<(String, ModelConfig)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let names = st.names();
    let prefix = if names.contains(&"conv1.weight") {
        ""
    } else if names.contains(&"module.conv1.weight") {
        "module."
    } else {
        return Err(err(path, "no `conv1.weight`: not a ResNet-18 checkpoint"));
    };
    let p = path.display().to_string();
    let (conv1, _) = read_f32(&st, &format!("{prefix}conv1.weight"), &p)?;
    let (lin, _) = read_f32(&st, &format!("{prefix}linear.weight"), &p)?;
    let cifs = names.iter().any(|n| n.starts_with(&format!("{prefix}layer4.0.Probe.")));
    let config = ModelConfig { arch: if cifs { Arch::ResNet18Cifs } else { Arch::ResNet18 }, width: conv1[0], classes: lin[0] };
    if conv1.len() != 4 || conv1[1] != 3 || lin.len() != 2 || lin[1] != 8 * config.width {
        return Err(err(path, format!("conv1.weight {conv1:?} and linear.weight {lin:?} are not a CIFAR ResNet-18")));
    }
    Ok((prefix.to_string(), config))
}

/// Loads a model checkpoint (ours or the reference's) into a new model of the shape it holds.
pub fn load_model(gpu: &Gpu, path: &Path) -> Result<ResNet18> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let (prefix, config) = infer_config(&bytes, path)?;
    let model = ResNet18::new(gpu, config, &mut Rng::new(0))?;
    load_state_dict(gpu, &model, &bytes, &prefix, &path.display().to_string())?;
    Ok(model)
}

fn ensure_same_model(path: &Path, found: ModelConfig, model: &ResNet18) -> Result<()> {
    if found != model.config {
        return Err(err(path, format!("holds a {} of width {}, this run trains a {} of width {}", found.arch.name(), found.width, model.config.arch.name(), model.config.width)));
    }
    Ok(())
}

/// Loads a model checkpoint's weights into `model`, which must be of the same architecture and
/// width (`train --init-from`).
pub fn load_weights_into(gpu: &Gpu, model: &ResNet18, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let (prefix, config) = infer_config(&bytes, path)?;
    ensure_same_model(path, config, model)?;
    load_state_dict(gpu, model, &bytes, &prefix, &path.display().to_string())
}

fn model_metadata(model: &ResNet18) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "cifs-wgpu/1".to_string()),
        ("arch".to_string(), model.config.arch.name().to_string()),
        ("width".to_string(), model.config.width.to_string()),
        ("classes".to_string(), model.config.classes.to_string()),
    ])
}

/// Writes a model-only checkpoint atomically.
pub fn save_model(gpu: &Gpu, model: &ResNet18, path: &Path, extra: &[(&str, String)]) -> Result<()> {
    let mut meta = model_metadata(model);
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let bytes = to_safetensors(gpu, model, meta)?;
    write_atomic(path, &bytes).map_err(|e| err(path, e.to_string()))
}

/// Where a training run stands at an epoch boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// Epochs completed (clean and adversarial together).
    pub epoch: usize,
    pub best_pgd20: f64,
}

/// Writes model, momentum buffers and run state atomically.
pub fn save_training(gpu: &Gpu, model: &ResNet18, sgd: &Sgd, state: &RunState, path: &Path) -> Result<()> {
    let mut meta = model_metadata(model);
    meta.insert("epoch".into(), state.epoch.to_string());
    meta.insert("best_pgd20".into(), format!("{}", state.best_pgd20));
    let mut momentum = Vec::new();
    for (p, v) in model.params().iter().zip(&sgd.velocity) {
        momentum.push((format!("optim.velocity.{}", p.name), v.shape().to_vec(), v.to_vec(gpu)?));
    }
    let bytes = to_safetensors_with(gpu, model, momentum, meta)?;
    write_atomic(path, &bytes).map_err(|e| err(path, e.to_string()))
}

/// Restores model, momentum and run state from a training checkpoint written by `save_training`.
pub fn load_training(gpu: &Gpu, model: &ResNet18, sgd: &Sgd, path: &Path) -> Result<RunState> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let (_, config) = infer_config(&bytes, path)?;
    ensure_same_model(path, config, model)?;
    let p = path.display().to_string();
    load_state_dict(gpu, model, &bytes, "", &p)?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(path, e.to_string()))?;
    for (param, v) in model.params().iter().zip(&sgd.velocity) {
        let (shape, data) = read_f32(&st, &format!("optim.velocity.{}", param.name), &p)?;
        if shape != v.shape() {
            return Err(err(path, format!("momentum of {} has shape {shape:?}", param.name)));
        }
        v.write_f32(gpu, &data)?;
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).ok_or_else(|| err(path, format!("no `{k}` in its metadata: not a training checkpoint")));
    Ok(RunState {
        epoch: get("epoch")?.parse().map_err(|_| err(path, "bad `epoch`"))?,
        best_pgd20: get("best_pgd20")?.parse().map_err(|_| err(path, "bad `best_pgd20`"))?,
    })
}
