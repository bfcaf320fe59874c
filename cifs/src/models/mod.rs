//! The models (docs/DESIGN.md, section 3): each family its own type with the reference's
//! state-dict names, behind one [`Model`] that the attacks, training and analysis use.
//!
//! - [`resnet::ResNet`]: ResNet-18 (CIFAR variant) and the reference's ResNet-10, plain, with
//!   CIFS or with CAS.
//! - [`wide_resnet::WideResNet`]: the pre-activation WideResNet, plain or with CIFS.
//! - [`probe::Probe`]: the CIFS probe and channel mask (and CAS's), shared by both.
//! - [`layers`]: convolution, batch norm and linear layers with PyTorch's names and
//!   initialisation.

pub mod layers;
pub mod probe;
pub mod resnet;
pub mod wide_resnet;

use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, CifsError, Result};
use layers::{BatchNorm, Linear, Param};
use probe::PairRule;
use resnet::ResNet;
use wide_resnet::WideResNet;

/// The architectures the command line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ModelKind {
    /// ResNet-18 with CIFS in both layer4 blocks (the paper's model).
    #[cfg_attr(feature = "cli", value(name = "resnet18-cifs"))]
    #[serde(rename = "resnet18-cifs")]
    ResNet18Cifs,
    /// Plain ResNet-18 (CIFAR variant).
    #[cfg_attr(feature = "cli", value(name = "resnet18"))]
    #[serde(rename = "resnet18")]
    ResNet18,
    /// ResNet-18 with CAS (channel-wise activation suppressing) in both layer4 blocks: the
    /// paper's main baseline.
    #[cfg_attr(feature = "cli", value(name = "resnet18-cas"))]
    #[serde(rename = "resnet18-cas")]
    ResNet18Cas,
    /// The reference's ResNet-10 for Fashion-MNIST (1x28x28 inputs) with CIFS after layer3 and
    /// layer4, masks scaled by 2.
    #[cfg_attr(feature = "cli", value(name = "resnet10-cifs"))]
    #[serde(rename = "resnet10-cifs")]
    ResNet10Cifs,
    /// Plain ResNet-10 for Fashion-MNIST (1x28x28 inputs).
    #[cfg_attr(feature = "cli", value(name = "resnet10"))]
    #[serde(rename = "resnet10")]
    ResNet10,
    /// Pre-activation WideResNet (`--depth`, `--widen`/`--width` the widen factor; WRN-28-10 by default) with CIFS inside
    /// the last block of block3 (nonlinear probe, hidden 240) and after the final BN-ReLU (linear).
    #[cfg_attr(feature = "cli", value(name = "wrn-cifs"))]
    #[serde(rename = "wrn-cifs")]
    WrnCifs,
    /// Pre-activation WideResNet.
    #[cfg_attr(feature = "cli", value(name = "wrn"))]
    #[serde(rename = "wrn")]
    Wrn,
}

impl ModelKind {
    pub const ALL: [ModelKind; 7] = [
        ModelKind::ResNet18Cifs,
        ModelKind::ResNet18,
        ModelKind::ResNet18Cas,
        ModelKind::ResNet10Cifs,
        ModelKind::ResNet10,
        ModelKind::WrnCifs,
        ModelKind::Wrn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::ResNet18 => "resnet18",
            ModelKind::ResNet18Cifs => "resnet18-cifs",
            ModelKind::ResNet18Cas => "resnet18-cas",
            ModelKind::ResNet10Cifs => "resnet10-cifs",
            ModelKind::ResNet10 => "resnet10",
            ModelKind::WrnCifs => "wrn-cifs",
            ModelKind::Wrn => "wrn",
        }
    }

    /// A pre-activation WideResNet (its `width` is the widen factor, and it has a `depth`).
    pub fn is_wrn(self) -> bool {
        matches!(self, ModelKind::WrnCifs | ModelKind::Wrn)
    }

    /// Refuses a chosen depth for a model whose depth is fixed by its kind (the ResNets).
    pub fn check_depth(self, depth: Option<usize>) -> Result<()> {
        match depth {
            Some(d) if !self.is_wrn() => {
                Err(CifsError::Invalid(format!("--depth {d}: only the WideResNet (wrn, wrn-cifs) takes a depth; {self} has a fixed one")))
            }
            _ => Ok(()),
        }
    }

    /// Depth when none is given: the WideResNet's 28; the ResNets' is fixed by their kind.
    pub fn default_depth(self) -> usize {
        match self {
            ModelKind::WrnCifs | ModelKind::Wrn => 28,
            ModelKind::ResNet10Cifs | ModelKind::ResNet10 => 10,
            _ => 18,
        }
    }

    /// `width` when none is given: 64 for the ResNets, the widen factor 10 for the WideResNet.
    pub fn default_width(self) -> usize {
        if self.is_wrn() {
            10
        } else {
            64
        }
    }

    /// BasicBlocks per stage.
    pub fn blocks_per_layer(self) -> usize {
        match self {
            ModelKind::ResNet10Cifs | ModelKind::ResNet10 => 1,
            _ => 2,
        }
    }

    /// The images the architecture is built for: (channels, side).
    pub fn input(self) -> (usize, usize) {
        match self {
            ModelKind::ResNet10Cifs | ModelKind::ResNet10 => (1, 28),
            _ => (3, 32),
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// ResNets: channels of layer1 (64 in the paper). WideResNet: the widen factor k (10).
    pub width: usize,
    pub classes: usize,
    /// WideResNet: depth, 6 n + 4 for n blocks per group (28). ResNets: 18 or 10, by kind.
    pub depth: usize,
}

impl ModelConfig {
    /// A model of `kind` with the width and depth a caller chose, each defaulting by kind.
    /// Only the WideResNet takes a depth: a ResNet's is its kind.
    pub fn resolve(kind: ModelKind, width: Option<usize>, depth: Option<usize>, classes: usize) -> Result<ModelConfig> {
        kind.check_depth(depth)?;
        Ok(ModelConfig { kind, width: width.unwrap_or(kind.default_width()), classes, depth: depth.unwrap_or(kind.default_depth()) })
    }

    /// A model of `kind` at its default depth.
    pub fn new(kind: ModelKind, width: usize, classes: usize) -> ModelConfig {
        ModelConfig { kind, width, classes, depth: kind.default_depth() }
    }

    /// Floats of the largest feature map of one image (the first stage's output).
    pub fn widest_map(&self) -> usize {
        let (_, side) = self.kind.input();
        let channels = if self.kind.is_wrn() { 16 * self.width } else { self.width };
        channels * side * side
    }

    /// Channels the classifier reads.
    pub fn features(&self) -> usize {
        if self.kind.is_wrn() {
            64 * self.width
        } else {
            8 * self.width
        }
    }
}

/// Train: batch statistics, label pair rule, gradients into the parameters.
/// Eval: running statistics, top-1/top-2 pair rule, parameters frozen (attacks, evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

pub struct Output {
    /// (N, classes)
    pub logits: Tensor,
    /// One (N, classes) tensor per CIFS probe, in block order.
    pub probes: Vec<Tensor>,
}

/// A CIFS block seen from inside: its output before the mask, spatially averaged, and its mask.
pub struct BlockTap {
    /// State-dict name of the block (`layer4.0`).
    pub name: String,
    /// (N, C)
    pub pooled: Tensor,
    /// (N, C)
    pub mask: Tensor,
}

/// What the analysis looks at inside a forward pass.
pub struct Taps {
    /// The features the classifier reads: the last stage's output, average-pooled (N, C).
    pub features: Tensor,
    /// One per CIFS block, in order.
    pub blocks: Vec<BlockTap>,
}

/// A block with a probe: its state-dict name and the channels of the map its probe masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedBlock {
    pub name: String,
    pub channels: usize,
}

/// The network of one family.
pub enum Network {
    ResNet(ResNet),
    Wide(WideResNet),
}

/// A model: its configuration and its network.
pub struct Model {
    pub config: ModelConfig,
    pub network: Network,
}

impl Model {
    /// A freshly initialised model (the reference's initialisation, drawn from `rng`).
    pub fn new(rt: &Runtime, config: ModelConfig, rng: &mut Rng) -> Result<Model> {
        check_setting(config.width >= 1, "width", config.width, "must be at least 1")?;
        check_setting(config.classes >= 2, "classes", config.classes, "a classifier needs at least 2 classes")?;
        let network = if config.kind.is_wrn() {
            Network::Wide(WideResNet::new(rt, &config, rng)?)
        } else {
            Network::ResNet(ResNet::new(rt, &config, rng)?)
        };
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
        let train = mode == Mode::Train;
        let rule = match (mode, labels) {
            (Mode::Train, Some(l)) => PairRule::Train(l),
            (Mode::Train, None) => return Err(CifsError::TrainNeedsLabels),
            (Mode::Eval, _) => PairRule::Eval,
        };
        match &self.network {
            Network::ResNet(n) => n.forward(rt, x, rule, train),
            Network::Wide(n) => n.forward(rt, x, rule, train),
        }
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        match &self.network {
            Network::ResNet(n) => n.params(),
            Network::Wide(n) => n.params(),
        }
    }

    /// Every batch-norm layer (their running statistics are model state too).
    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        match &self.network {
            Network::ResNet(n) => n.batchnorms(),
            Network::Wide(n) => n.batchnorms(),
        }
    }

    /// The final linear layer (`linear`; the WideResNet's `fc`).
    pub fn classifier(&self) -> &Linear {
        match &self.network {
            Network::ResNet(n) => &n.classifier,
            Network::Wide(n) => &n.classifier,
        }
    }

    /// The blocks with a CIFS or CAS probe, in probe order.
    pub fn probed_blocks(&self) -> Vec<ProbedBlock> {
        match &self.network {
            Network::ResNet(n) => n.probed_blocks(),
            Network::Wide(n) => n.probed_blocks(),
        }
    }
}

/// A pooled (N, C, 1, 1) map as the (N, C) features the classifier reads.
fn flatten(pooled: &Tensor) -> Result<Tensor> {
    let n = pooled.shape()[0];
    Ok(pooled.reshape(&[n, pooled.numel() / n])?)
}

#[cfg(test)]
mod tests {
    use super::ModelKind;

    #[test]
    fn model_names_are_the_cli_and_config_names() {
        for kind in ModelKind::ALL {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{}\"", kind.name()));
        }
    }
}
