//! A model: its configuration and its network, whatever the family. The attacks, training and
//! analysis use this; only `models::registry` and the family files know which families exist.

use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, CifsError, Result};
use crate::models::family::{ModelConfig, Network};
use crate::models::layers::{BatchNorm, Linear, Param};
use crate::models::output::{Mode, Output, ProbedBlock, Taps};
use crate::models::probe::PairRule;

pub struct Model {
    pub config: ModelConfig,
    network: Box<dyn Network>,
}

impl Model {
    /// A freshly initialised model (the reference's initialisation, drawn from `rng`).
    pub fn new(rt: &Runtime, config: ModelConfig, rng: &mut Rng) -> Result<Model> {
        check_setting(config.width >= 1, "width", config.width, "must be at least 1")?;
        check_setting(config.classes >= 2, "classes", config.classes, "a classifier needs at least 2 classes")?;
        let network = config.kind.family().build(rt, &config, rng)?;
        Ok(Model { config, network })
    }

    /// Forward pass on images x (N, C, H, W) in [0, 1]. Train mode needs the labels (N,) u32.
    pub fn forward(&self, rt: &Runtime, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> Result<Output> {
        Ok(self.forward_with_taps(rt, x, labels, mode)?.0)
    }

    /// As [`Model::forward`], also returning what the analysis looks at inside the model.
    pub fn forward_with_taps(&self, rt: &Runtime, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> Result<(Output, Taps)> {
        let (channels, side) = self.config.kind.input();
        if x.shape().len() != 4 || x.shape()[1] != channels || x.shape()[2] < side || x.shape()[3] < side {
            return Err(CifsError::InputShape {
                shape: x.shape().to_vec(),
                expected: format!("(N, {channels}, {side}, {side}) images for {}", self.config.kind),
            });
        }
        let rule = match (mode, labels) {
            (Mode::Train, Some(l)) => PairRule::Train(l),
            (Mode::Train, None) => return Err(CifsError::TrainNeedsLabels),
            (Mode::Eval, _) => PairRule::Eval,
        };
        self.network.forward(rt, x, rule, mode == Mode::Train)
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        self.network.params()
    }

    /// Every batch-norm layer (their running statistics are model state too).
    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        self.network.batchnorms()
    }

    /// The final linear layer (`linear`; the WideResNet's `fc`).
    pub fn classifier(&self) -> &Linear {
        self.network.classifier()
    }

    /// The blocks with a CIFS or CAS probe, in probe order.
    pub fn probed_blocks(&self) -> Vec<ProbedBlock> {
        self.network.probed_blocks()
    }
}
