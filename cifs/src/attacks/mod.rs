//! Attacks on a model in evaluation mode (docs/DESIGN.md, section 4), and the evaluation that
//! runs a list of them over a test set.

pub mod apgd;
pub mod evaluate;
pub mod hostloss;
pub mod pgd;
pub mod single_step;
pub mod square;
