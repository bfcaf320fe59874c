//! Model weights in and out as safetensors under PyTorch state-dict names (`conv1.weight`,
//! `layer4.0.Probe.Probe.0.fc.weight`, `bn1.running_var`, `bn1.num_batches_tracked`, ...), so a
//! model trained by the reference code loads here and ours loads there.
//!
//! Files are byte-for-byte reproducible: tensors are stored in name order (safetensors sorts
//! them) and the metadata in key order, so identical runs write identical checkpoints.

use std::collections::BTreeMap;

use engine::{Runtime, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{CifsError, Result};
use crate::models::Model;

/// Opens safetensors bytes, naming `path` if they are not safetensors.
pub fn open<'a>(bytes: &'a [u8], path: &str) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| CifsError::NotSafetensors { path: path.to_string(), reason: e.to_string() })
}

/// The metadata of safetensors bytes (empty if there is none).
pub fn metadata(bytes: &[u8], path: &str) -> Result<BTreeMap<String, String>> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| CifsError::NotSafetensors { path: path.to_string(), reason: e.to_string() })?;
    Ok(meta.metadata().clone().unwrap_or_default().into_iter().collect())
}

fn tensor<'a>(st: &'a SafeTensors, key: &str, path: &str) -> Result<safetensors::tensor::TensorView<'a>> {
    st.tensor(key).map_err(|_| CifsError::MissingTensor { path: path.to_string(), name: key.to_string() })
}

/// Reads one tensor as f32 (stored as F32 or F64) with its shape.
pub fn read_f32(st: &SafeTensors, key: &str, path: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = tensor(st, key, path)?;
    let data = t.data();
    let v: Vec<f32> = match t.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        other => {
            return Err(CifsError::TensorDtype {
                path: path.to_string(),
                name: key.to_string(),
                dtype: format!("{other:?}"),
                expected: "F32 or F64",
            })
        }
    };
    Ok((t.shape().to_vec(), v))
}

/// Reads an integer tensor (I64 or I32) as i64 values.
pub fn read_i64(st: &SafeTensors, key: &str, path: &str) -> Result<Vec<i64>> {
    let t = tensor(st, key, path)?;
    match t.dtype() {
        Dtype::I64 => Ok(t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
        Dtype::I32 => Ok(t.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect()),
        other => Err(CifsError::TensorDtype {
            path: path.to_string(),
            name: key.to_string(),
            dtype: format!("{other:?}"),
            expected: "I64 or I32",
        }),
    }
}

fn load_into(st: &SafeTensors, key: &str, path: &str, rt: &Runtime, dst: &Tensor) -> Result<()> {
    let (shape, v) = read_f32(st, key, path)?;
    if shape != dst.shape() {
        return Err(CifsError::TensorShape { path: path.to_string(), name: key.to_string(), found: shape, expected: dst.shape().to_vec() });
    }
    dst.write_f32(rt, &v)?;
    Ok(())
}

/// Loads every parameter and BN buffer of `model` from `bytes` (safetensors), reading each name
/// with `prefix` in front. Fails, naming the tensor, if one is missing or of another shape.
pub fn load_state_dict(rt: &Runtime, model: &Model, bytes: &[u8], prefix: &str, path: &str) -> Result<()> {
    let st = open(bytes, path)?;
    for p in model.params() {
        load_into(&st, &format!("{prefix}{}", p.name), path, rt, p.leaf())?;
    }
    for bn in model.batchnorms() {
        load_into(&st, &format!("{prefix}{}.running_mean", bn.name), path, rt, &bn.running_mean)?;
        load_into(&st, &format!("{prefix}{}.running_var", bn.name), path, rt, &bn.running_var)?;
        let key = format!("{prefix}{}.num_batches_tracked", bn.name);
        if st.names().iter().any(|n| **n == key) {
            bn.num_batches_tracked.set(*read_i64(&st, &key, path)?.first().unwrap_or(&0));
        }
    }
    Ok(())
}

/// One named tensor of a state dict, read back from the GPU.
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The model's state: parameters and BN running statistics as f32, plus the BN batch counters.
pub fn state_dict(rt: &Runtime, model: &Model) -> Result<(Vec<Entry>, BTreeMap<String, i64>)> {
    let mut named: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), p.leaf())).collect();
    let mut counters = BTreeMap::new();
    for bn in model.batchnorms() {
        named.push((format!("{}.running_mean", bn.name), &bn.running_mean));
        named.push((format!("{}.running_var", bn.name), &bn.running_var));
        counters.insert(format!("{}.num_batches_tracked", bn.name), bn.num_batches_tracked.get());
    }
    // One submit and one wait for the whole state, not one per tensor.
    let values = Tensor::read_all(rt, &named.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
    let floats =
        named.iter().zip(values).map(|((name, t), values)| Entry { name: name.clone(), shape: t.shape().to_vec(), values }).collect();
    Ok((floats, counters))
}

/// Serialises the model's state dict (f32 tensors, i64 BN counters), `extra` f32 tensors stored
/// beside it, and `metadata`, as safetensors.
pub fn to_safetensors(rt: &Runtime, model: &Model, extra: Vec<Entry>, metadata: BTreeMap<String, String>) -> Result<Vec<u8>> {
    let (mut floats, counters) = state_dict(rt, model)?;
    floats.extend(extra);
    let float_bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        floats.into_iter().map(|e| (e.name, e.shape, e.values.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let count_bytes: Vec<(String, Vec<u8>)> = counters.into_iter().map(|(n, c)| (n, c.to_le_bytes().to_vec())).collect();
    let invalid = |e: safetensors::SafeTensorError| CifsError::Invalid(format!("serialising a checkpoint: {e}"));
    let mut views = Vec::new();
    for (n, s, b) in &float_bytes {
        views.push((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(invalid)?));
    }
    for (n, b) in &count_bytes {
        views.push((n.clone(), TensorView::new(Dtype::I64, vec![], b).map_err(invalid)?));
    }
    let bytes = safetensors::serialize(views, None).map_err(invalid)?;
    Ok(with_metadata(&bytes, &metadata))
}

/// Puts `metadata` into the header of safetensors `bytes`, keys in sorted order. (The library
/// takes metadata as a `HashMap` and writes it in that map's order, which changes from run to
/// run; a header rebuilt from ordered maps does not.)
fn with_metadata(bytes: &[u8], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte header length")) as usize;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors wrote a JSON header");
    header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings serialise"));
    let mut text = serde_json::to_vec(&header).expect("JSON values serialise");
    // The data must start 8-byte aligned; safetensors pads its header with spaces too.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
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
