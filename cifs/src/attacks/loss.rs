//! The loss an attack ascends ([`AttackLoss`]): adaptive attacks on CIFS models need more than
//! the training objective (docs/DESIGN.md, section 4).

use engine::ops::{cross_entropy::cross_entropy, dlr_loss::dlr_loss, margin_loss::margin_loss};
use engine::{Runtime, Tensor};

use crate::error::{check_setting, Result};
use crate::loss::joint_loss;
use crate::models::Output;

/// The loss an attack ascends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttackLoss {
    /// Cross-entropy of the final logits.
    Ce,
    /// The training objective: joint loss with this beta (plain CE for a model without probes).
    Joint { beta: f32 },
    /// CW margin loss on the final logits: `-max(real - best other + confidence, 0)`.
    CwMargin { confidence: f32 },
    /// The DLR loss of Croce and Hein on the final logits (untargeted).
    Dlr,
}

impl AttackLoss {
    /// The name reported beside each result.
    pub fn describe(&self) -> String {
        match self {
            AttackLoss::Ce => "ce".into(),
            AttackLoss::Joint { beta } => format!("joint (beta {beta})"),
            AttackLoss::CwMargin { confidence } => format!("cw margin (confidence {confidence})"),
            AttackLoss::Dlr => "dlr".into(),
        }
    }

    /// The loss of `out` as a scalar tensor whose gradient points where the loss of every image
    /// rises (a sum or mean over the batch: attacks step by the sign, so the scale is moot).
    pub fn of(&self, rt: &Runtime, out: &Output, labels: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            AttackLoss::Ce => cross_entropy(rt, &out.logits, labels)?,
            AttackLoss::Joint { beta } => joint_loss(rt, out, labels, beta)?,
            AttackLoss::CwMargin { confidence } => margin_loss(rt, &out.logits, labels, confidence)?,
            AttackLoss::Dlr => dlr_loss(rt, &out.logits, labels, None)?,
        })
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            AttackLoss::Joint { beta } => {
                check_setting(beta.is_finite() && beta >= 0.0, "beta", beta, "the probe-loss weight must be finite and at least 0")
            }
            AttackLoss::CwMargin { confidence } => {
                check_setting(confidence.is_finite(), "confidence", confidence, "the CW margin must be finite")
            }
            AttackLoss::Ce | AttackLoss::Dlr => Ok(()),
        }
    }
}
