//! Errors of the model layer. Variants carry what went wrong as data (the tensor's name, the
//! shapes, the setting and its value), so callers can act on them and the CLI prints one line.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CifsError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),

    #[error(transparent)]
    Data(#[from] datasets::DatasetError),

    #[error(transparent)]
    Distributed(#[from] crate::distributed::collective::DistributedError),

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },

    #[error("checkpoint {path}: not a safetensors file ({reason})")]
    NotSafetensors { path: String, reason: String },

    #[error("checkpoint {path}: missing tensor `{name}`")]
    MissingTensor { path: String, name: String },

    #[error("checkpoint {path}: `{name}` has shape {found:?}, this model needs {expected:?} (another model or width?)")]
    TensorShape { path: String, name: String, found: Vec<usize>, expected: Vec<usize> },

    #[error("checkpoint {path}: `{name}` has dtype {dtype}, expected {expected}")]
    TensorDtype { path: String, name: String, dtype: String, expected: &'static str },

    #[error("checkpoint {path}: {reason}")]
    UnknownModel { path: String, reason: String },

    #[error("checkpoint {path} holds a {found}, this run needs a {expected}")]
    WrongModel { path: String, found: String, expected: String },

    #[error("checkpoint {path}: no `{key}` in its metadata: not a training checkpoint")]
    NotTrainingCheckpoint { path: String, key: &'static str },

    #[error("{name} = {value}: {rule}")]
    InvalidSetting { name: &'static str, value: String, rule: &'static str },

    #[error("{name} = {value} is larger than the images' whole range [0, 1]: counted in pixel levels, write it over 255 ({value}/255 = {scaled:.5})")]
    AbovePixelRange { name: &'static str, value: f32, scaled: f32 },

    #[error(
        "batch size {batch} needs {need_mib} MiB activation buffers, but adapter `{adapter}` binds at most {limit_mib} MiB; use --batch-size {max} or less"
    )]
    BatchTooLarge { batch: usize, max: usize, need_mib: u64, limit_mib: u64, adapter: String },

    #[error("{model} takes {takes} images and {dataset} has {has}; choose a model for this dataset (--model)")]
    ImagesDoNotFit { model: String, takes: String, dataset: String, has: String },

    #[error("input of shape {shape:?}: this model takes {expected}")]
    InputShape { shape: Vec<usize>, expected: String },

    #[error("labels of shape {labels:?} for a batch of {batch}")]
    LabelShape { labels: Vec<usize>, batch: usize },

    #[error("a train-mode forward needs the labels")]
    TrainNeedsLabels,

    #[error("no gradient reached parameter `{name}`")]
    NoGradient { name: String },

    #[error("the {split} split is empty")]
    EmptySplit { split: &'static str },

    #[error("the run to resume was made with other settings: {changes}; resume with its settings (config.json), or allow the changes (--allow-changes), which are then recorded in config.json's history")]
    ChangedSettings { changes: String },

    #[error("{what}: no images selected")]
    NoImages { what: &'static str },

    #[error("training diverged: the loss became {loss} at epoch {epoch}, step {step}; {kept}")]
    Diverged { loss: f32, epoch: usize, step: usize, kept: String },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, CifsError>;

/// Fails with [`CifsError::InvalidSetting`] unless `ok`.
pub fn check_setting(ok: bool, name: &'static str, value: impl std::fmt::Display, rule: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(CifsError::InvalidSetting { name, value: value.to_string(), rule })
    }
}

/// Fails unless `value`, an attack's radius or step on images in [0, 1], is finite and in
/// [0, 1] ([`CifsError::InvalidSetting`] with `rule` when negative or not finite). A value above 1
/// would let every pixel take any value, so it is almost surely meant in pixel levels (8 for
/// 8/255): [`CifsError::AbovePixelRange`] says how to write it.
pub fn check_image_fraction(name: &'static str, value: f32, rule: &'static str) -> Result<()> {
    check_setting(value.is_finite() && value >= 0.0, name, value, rule)?;
    if value > 1.0 {
        return Err(CifsError::AbovePixelRange { name, value, scaled: value / 255.0 });
    }
    Ok(())
}

/// The error of an I/O operation on `path`, for `map_err`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CifsError + '_ {
    move |source| CifsError::Io { path: path.display().to_string(), source }
}
