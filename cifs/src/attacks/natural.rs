//! `natural`: no attack. Its row of the table is the accuracy on the clean images, which the
//! evaluation judges before any attack runs.

use std::sync::Arc;

use engine::Runtime;

use crate::attacks::attack::{Attack, Batch, EvalSettings, Images};
use crate::error::Result;
use crate::models::Model;

pub struct Natural;

impl Attack for Natural {
    fn name(&self) -> String {
        "natural".into()
    }

    fn loss(&self, _: &EvalSettings) -> String {
        "none".into()
    }

    /// The images as they are; the flags it is handed are the clean images' already.
    fn run(&self, _: &Runtime, _: &Model, b: &Batch, _: &EvalSettings, _: &mut [bool]) -> Result<Images> {
        Ok(Images::Device(b.x.clone()))
    }
}

pub fn parse(name: &str) -> Option<Arc<dyn Attack>> {
    (name == "natural").then(|| Arc::new(Natural) as Arc<dyn Attack>)
}
