//! Model weights in and out as safetensors under PyTorch state-dict names (`conv1.weight`,
//! `layer4.0.Probe.Probe.0.fc.weight`, `bn1.running_var`, `bn1.num_batches_tracked`, ...), so a
//! model trained by the reference code loads here and ours loads there.

use std::collections::HashMap;

use engine::{Gpu, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::error::{CifsError, Result};
use crate::resnet::ResNet18;

fn err(path: &str, reason: impl Into<String>) -> CifsError {
    CifsError::Checkpoint { path: path.to_string(), reason: reason.into() }
}

/// Reads one tensor as f32 (stored as F32 or F64) with its shape.
pub fn read_f32(st: &SafeTensors, key: &str, path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st.tensor(key).map_err(|_| err(path, format!("missing tensor `{key}`")))?;
    let data = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        other => return Err(err(path, format!("tensor `{key}` has dtype {other:?}, expected F32 or F64"))),
    };
    Ok((t.shape().to_vec(), v))
}

/// Reads an integer tensor (I64 or I32) as i64 values.
pub fn read_i64(st: &SafeTensors, key: &str, path: &str) -> Result<Vec<i64>> {
    let t = st.tensor(key).map_err(|_| err(path, format!("missing tensor `{key}`")))?;
    match t.dtype() {
        Dtype::I64 => Ok(t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()),
        Dtype::I32 => Ok(t.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect()),
        other => Err(err(path, format!("tensor `{key}` has dtype {other:?}, expected an integer type"))),
    }
}

fn load_into(st: &SafeTensors, key: &str, path: &str, gpu: &Gpu, dst: &Tensor) -> Result<()> {
    let (shape, v) = read_f32(st, key, path)?;
    if shape != dst.shape() {
        return Err(err(path, format!("`{key}` has shape {shape:?}, this model needs {:?} (another model or width?)", dst.shape())));
    }
    dst.write_f32(gpu, &v)?;
    Ok(())
}

/// Loads every parameter and BN buffer of `model` from `bytes` (safetensors), reading each name
/// with `prefix` in front. Fails, naming the tensor, if one is missing or of another shape.
pub fn load_state_dict(gpu: &Gpu, model: &ResNet18, bytes: &[u8], prefix: &str, path: &str) -> Result<()> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    for p in model.params() {
        load_into(&st, &format!("{prefix}{}", p.name), path, gpu, p.leaf())?;
    }
    for bn in model.batchnorms() {
        load_into(&st, &format!("{prefix}{}.running_mean", bn.name), path, gpu, &bn.running_mean)?;
        load_into(&st, &format!("{prefix}{}.running_var", bn.name), path, gpu, &bn.running_var)?;
        let key = format!("{prefix}{}.num_batches_tracked", bn.name);
        if st.names().iter().any(|n| **n == key) {
            bn.num_batches_tracked.set(*read_i64(&st, &key, path)?.first().unwrap_or(&0));
        }
    }
    Ok(())
}

/// The model's state as (name, shape, f32 values) plus the BN batch counters, read back from the GPU.
pub fn state_dict(gpu: &Gpu, model: &ResNet18) -> Result<(Vec<(String, Vec<usize>, Vec<f32>)>, HashMap<String, i64>)> {
    let mut floats = Vec::new();
    for p in model.params() {
        floats.push((p.name.clone(), p.leaf().shape().to_vec(), p.leaf().to_vec(gpu)?));
    }
    let mut counters = HashMap::new();
    for bn in model.batchnorms() {
        floats.push((format!("{}.running_mean", bn.name), bn.running_mean.shape().to_vec(), bn.running_mean.to_vec(gpu)?));
        floats.push((format!("{}.running_var", bn.name), bn.running_var.shape().to_vec(), bn.running_var.to_vec(gpu)?));
        counters.insert(format!("{}.num_batches_tracked", bn.name), bn.num_batches_tracked.get());
    }
    Ok((floats, counters))
}

/// Serialises the model's state dict (f32 tensors, i64 BN counters) plus `metadata` as safetensors.
pub fn to_safetensors(gpu: &Gpu, model: &ResNet18, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    to_safetensors_with(gpu, model, Vec::new(), metadata)
}

/// As [`to_safetensors`], with `extra` f32 tensors (name, shape, values) stored beside the model's.
pub fn to_safetensors_with(gpu: &Gpu, model: &ResNet18, extra: Vec<(String, Vec<usize>, Vec<f32>)>, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    use safetensors::tensor::TensorView;
    let (mut floats, counters) = state_dict(gpu, model)?;
    floats.extend(extra);
    let float_bytes: Vec<(String, Vec<usize>, Vec<u8>)> = floats.into_iter().map(|(n, s, v)| (n, s, bytemuck_f32(&v))).collect();
    let count_bytes: Vec<(String, Vec<u8>)> = counters.into_iter().map(|(n, c)| (n, c.to_le_bytes().to_vec())).collect();
    let mut views = Vec::new();
    for (n, s, b) in &float_bytes {
        views.push((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| CifsError::Invalid(e.to_string()))?));
    }
    for (n, b) in &count_bytes {
        views.push((n.clone(), TensorView::new(Dtype::I64, vec![], b).map_err(|e| CifsError::Invalid(e.to_string()))?));
    }
    safetensors::serialize(views, Some(metadata)).map_err(|e| CifsError::Invalid(e.to_string()))
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename, so a kill at
/// any moment leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
