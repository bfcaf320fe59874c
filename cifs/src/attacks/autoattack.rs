//! `autoattack`: Croce and Hein's standard evaluation, a chain of APGD-CE, then APGD-T, then
//! FAB-T, then Square, each on the images still robust after the ones before. The evaluation
//! reports the robust accuracy after each stage; a stage the dataset has too few classes for
//! (APGD-T: 4) is skipped and its row says so.

use std::sync::Arc;

use engine::Runtime;

use crate::attacks::apgd::ApgdAttack;
use crate::attacks::attack::{run_chain, Attack, Batch, EvalSettings, Images};
use crate::attacks::fab::FabT;
use crate::attacks::square::SquareAttack;
use crate::error::Result;
use crate::models::Model;

pub struct AutoAttack;

impl Attack for AutoAttack {
    fn name(&self) -> String {
        "autoattack".into()
    }

    /// Each stage's loss, in order.
    fn loss(&self, s: &EvalSettings) -> String {
        self.stages().iter().map(|st| format!("{}: {}", st.name(), st.loss(s))).collect::<Vec<_>>().join("; ")
    }

    /// The first stage's: the chain runs without the stages the dataset has too few classes for.
    fn min_classes(&self, s: &EvalSettings) -> usize {
        ApgdAttack::Ce.min_classes(s)
    }

    fn validate(&self, s: &EvalSettings) -> Result<()> {
        self.stages().iter().try_for_each(|st| st.validate(s))
    }

    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        Ok(Images::Host(run_chain(&self.stages(), rt, model, b, s, robust)?))
    }

    fn stages(&self) -> Vec<Arc<dyn Attack>> {
        vec![Arc::new(ApgdAttack::Ce), Arc::new(ApgdAttack::Targeted), Arc::new(FabT), Arc::new(SquareAttack)]
    }
}

pub fn parse(name: &str) -> Option<Arc<dyn Attack>> {
    (name == "autoattack").then(|| Arc::new(AutoAttack) as Arc<dyn Attack>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_are_standard_autoattacks_in_its_order() {
        let names: Vec<String> = AutoAttack.stages().iter().map(|st| st.name()).collect();
        assert_eq!(names, ["apgd-ce", "apgd-t", "fab-t", "square"]);
        let s = EvalSettings::reference(8.0 / 255.0, 16);
        assert_eq!((s.queries, s.target_classes, s.iterations, s.restarts), (5000, 9, 100, 1), "the standard run's budgets");
    }
}
