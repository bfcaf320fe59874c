//! A RobustBench model card (`model_info/<dataset>/Linf/<name>.json`) from an evaluation: the
//! clean and AutoAttack accuracy of the whole test set, formatted as RobustBench writes them
//! (percent strings with 2 decimals, eps as `k/255`). A card is refused for an evaluation of a
//! subset, or one that is not AutoAttack with cross-entropy APGD-CE: RobustBench's numbers are
//! standard AutoAttack on every test image.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::models::ModelConfig;

/// The attack rows of an evaluation the card reads (`eval --json`'s rows, or the evaluation's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Row {
    pub attack: String,
    pub loss: String,
    pub correct: usize,
    pub images: usize,
}

/// Why no card is written.
#[derive(Debug, Error, PartialEq)]
pub enum CardError {
    #[error("the evaluation has no `{0}` row; a card needs `natural` and `autoattack` (eval --attacks natural,autoattack)")]
    MissingRow(&'static str),
    #[error(
        "the `{attack}` row counts {images} of the test split's {test} images; RobustBench's numbers are on the whole test set, so no card is written for a subset"
    )]
    Subset { attack: String, images: usize, test: usize },
    #[error("AutoAttack's APGD-CE ascended `{0}`; standard AutoAttack (RobustBench) ascends cross-entropy (eval --attack-loss ce)")]
    NotStandard(String),
}

/// What the card says about the model that the evaluation does not.
#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    pub authors: String,
    pub link: String,
    pub venue: String,
    pub dataset: String,
    pub eps: f32,
    /// Reported (clean, AutoAttack) accuracy in percent; the measured ones when `None`.
    pub reported: Option<(f64, f64)>,
    /// The tool and its commit, and the attacks' settings, for the footnote.
    pub footnote: String,
}

/// The card, field for field as RobustBench's model_info files hold them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    pub name: String,
    pub authors: String,
    pub link: String,
    pub architecture: String,
    pub dataset: String,
    pub threat_model: &'static str,
    pub eps: String,
    pub clean_acc: String,
    pub autoattack_acc: String,
    pub number_forward_passes: u32,
    pub additional_data: bool,
    /// The reported AutoAttack accuracy (RobustBench's `reported`).
    pub reported: String,
    /// The reported clean accuracy (beside `reported`, which RobustBench keeps for the robust one).
    pub reported_clean_acc: String,
    pub venue: String,
    pub footnote: String,
    pub unreliable: bool,
}

/// The architecture as the card names it: `resnet18-cifs (width 64)`, `wrn-cifs (depth 28, width 10)`.
pub fn architecture(c: &ModelConfig) -> String {
    if c.kind.depth_is_chosen() {
        format!("{} (depth {}, width {})", c.kind, c.depth, c.width)
    } else {
        format!("{} (width {})", c.kind, c.width)
    }
}

/// `eps` as RobustBench writes it: `8/255` where it is a whole number of pixel levels, else the
/// decimal.
pub fn eps_string(eps: f32) -> String {
    let levels = (eps * 255.0).round();
    if (levels / 255.0 - eps).abs() <= 1e-6 {
        format!("{levels}/255")
    } else {
        format!("{eps}")
    }
}

/// A percentage with 2 decimals, as RobustBench's `clean_acc` and `autoattack_acc`.
pub fn percent(correct: usize, images: usize) -> f64 {
    100.0 * correct as f64 / images as f64
}

fn whole_row<'a>(rows: &'a [Row], attack: &'static str, test: usize) -> Result<&'a Row, CardError> {
    let row = rows.iter().find(|r| r.attack == attack).ok_or(CardError::MissingRow(attack))?;
    if row.images != test || test == 0 {
        return Err(CardError::Subset { attack: row.attack.clone(), images: row.images, test });
    }
    Ok(row)
}

/// The card of `model` from an evaluation's `rows` over a test split of `test` images.
pub fn card(model: &ModelConfig, d: &Description, rows: &[Row], test: usize) -> Result<ModelCard, CardError> {
    let natural = whole_row(rows, "natural", test)?;
    let aa = whole_row(rows, "autoattack", test)?;
    match rows.iter().find(|r| r.attack == "autoattack/apgd-ce") {
        Some(r) if r.loss == "ce" => {}
        Some(r) => return Err(CardError::NotStandard(r.loss.clone())),
        None => return Err(CardError::MissingRow("autoattack/apgd-ce")),
    }
    let (clean, robust) = (percent(natural.correct, natural.images), percent(aa.correct, aa.images));
    let (reported_clean, reported_aa) = d.reported.unwrap_or((clean, robust));
    Ok(ModelCard {
        name: d.name.clone(),
        authors: d.authors.clone(),
        link: d.link.clone(),
        architecture: architecture(model),
        dataset: d.dataset.clone(),
        threat_model: "Linf",
        eps: eps_string(d.eps),
        clean_acc: format!("{clean:.2}"),
        autoattack_acc: format!("{robust:.2}"),
        number_forward_passes: 1,
        additional_data: false,
        reported: format!("{reported_aa:.2}"),
        reported_clean_acc: format!("{reported_clean:.2}"),
        venue: d.venue.clone(),
        footnote: d.footnote.clone(),
        unreliable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::resnet::RESNET18_CIFS;

    #[test]
    fn eps_is_a_fraction_of_255_where_it_is_one() {
        assert_eq!(eps_string(8.0 / 255.0), "8/255");
        assert_eq!(eps_string(0.0), "0/255");
        assert_eq!(eps_string(0.03), "0.03");
    }

    fn rows(images: usize, loss: &str) -> Vec<Row> {
        let row = |attack: &str, correct| Row { attack: attack.into(), loss: "ce".into(), correct, images };
        let mut v = vec![row("natural", 7), row("autoattack/apgd-ce", 4), row("autoattack", 3)];
        v[1].loss = loss.into();
        v
    }

    fn description() -> Description {
        Description {
            name: "n".into(),
            authors: "a".into(),
            link: "l".into(),
            venue: "v".into(),
            dataset: "cifar10".into(),
            eps: 8.0 / 255.0,
            reported: None,
            footnote: "f".into(),
        }
    }

    #[test]
    fn measured_numbers_fill_the_card_and_subsets_are_refused() {
        let model = ModelConfig::resolve(RESNET18_CIFS, None, None, 10).unwrap();
        let c = card(&model, &description(), &rows(12, "ce"), 12).unwrap();
        assert_eq!((c.clean_acc.as_str(), c.autoattack_acc.as_str(), c.reported.as_str()), ("58.33", "25.00", "25.00"));
        assert_eq!(c.architecture, "resnet18-cifs (width 64)");
        assert_eq!(
            card(&model, &description(), &rows(6, "ce"), 12).unwrap_err(),
            CardError::Subset { attack: "natural".into(), images: 6, test: 12 }
        );
        assert_eq!(
            card(&model, &description(), &rows(12, "joint (beta 2)"), 12).unwrap_err(),
            CardError::NotStandard("joint (beta 2)".into())
        );
        assert_eq!(card(&model, &description(), &rows(12, "ce")[..1], 12).unwrap_err(), CardError::MissingRow("autoattack"));
    }
}
