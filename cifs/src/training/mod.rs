//! Training (docs/DESIGN.md, sections 4 and 5): one adversarial step, TRADES, SGD, the
//! per-dataset recipes, the whole run with its checkpoints and resumption, and the benchmark of
//! the steps.

pub mod bench;
pub mod ema;
pub mod optim;
pub mod overfitting;
pub mod recipe;
pub mod resume;
pub mod run;
pub mod single_step;
pub mod step;
pub mod trades;

use crate::error::{CifsError, Result};
use crate::models::ModelKind;

/// Refuses a dataset whose images are not the ones `model` is built for, before any work.
pub fn check_images_fit(model: ModelKind, dataset: &str, shape: datasets::ImageShape) -> Result<()> {
    let (channels, side) = model.input();
    if shape != (datasets::ImageShape { channels, side }) {
        return Err(CifsError::ImagesDoNotFit {
            model: model.to_string(),
            takes: format!("{channels}x{side}x{side}"),
            dataset: dataset.to_string(),
            has: shape.to_string(),
        });
    }
    Ok(())
}
