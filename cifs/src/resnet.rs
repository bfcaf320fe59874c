//! ResNet-18 (CIFAR variant) and ResNet18-CIFS (DESIGN §3), and the reference's ResNet-10 for
//! Fashion-MNIST (DESIGN-SETUPS §2), with PyTorch state-dict names.
//!
//! stem conv3x3(in->w) BN ReLU; layer1..4 of two BasicBlocks each (ResNet-10: one) (w, 2w, 4w,
//! 8w channels, strides 1, 2, 2, 2); avg_pool2d(4); linear(8w -> classes). In ResNet18-CIFS the
//! two blocks of layer4 mask their output with a probe: block 0 nonlinear, block 1 linear. In
//! ResNet10-CIFS (1x28x28 inputs) layer3's output is masked by a nonlinear probe (`Probe_0`) and
//! layer4's by a linear one (`Probe_1`), both masks scaled by 2.

use engine::ops::batchnorm::Act;
use engine::ops::pool;
use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, CifsError, Result};
use crate::layers::{BatchNorm, Conv, Linear, Param};
use crate::probe::{Masked, PairRule, Probe, PROBE_HIDDEN};

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
}

impl ModelKind {
    pub const ALL: [ModelKind; 5] = [ModelKind::ResNet18Cifs, ModelKind::ResNet18, ModelKind::ResNet18Cas, ModelKind::ResNet10Cifs, ModelKind::ResNet10];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::ResNet18 => "resnet18",
            ModelKind::ResNet18Cifs => "resnet18-cifs",
            ModelKind::ResNet18Cas => "resnet18-cas",
            ModelKind::ResNet10Cifs => "resnet10-cifs",
            ModelKind::ResNet10 => "resnet10",
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
    /// Channels of layer1 (64 in the paper).
    pub width: usize,
    pub classes: usize,
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

pub struct BasicBlock {
    /// State-dict name (`layer4.0`).
    pub name: String,
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    pub shortcut: Option<(Conv, BatchNorm)>,
    pub probe: Option<Probe>,
}

impl BasicBlock {
    fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, stride: u32, rng: &mut Rng) -> Result<BasicBlock> {
        let shortcut = if stride != 1 || cin != cout {
            Some((Conv::new(rt, &format!("{name}.shortcut.0"), cin, cout, 1, stride, rng)?, BatchNorm::new(rt, &format!("{name}.shortcut.1"), cout)?))
        } else {
            None
        };
        Ok(BasicBlock {
            name: name.to_string(),
            conv1: Conv::new(rt, &format!("{name}.conv1"), cin, cout, 3, stride, rng)?,
            bn1: BatchNorm::new(rt, &format!("{name}.bn1"), cout)?,
            conv2: Conv::new(rt, &format!("{name}.conv2"), cout, cout, 3, 1, rng)?,
            bn2: BatchNorm::new(rt, &format!("{name}.bn2"), cout)?,
            shortcut,
            probe: None,
        })
    }

    /// ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)), then the CIFS mask if this block has a
    /// probe (what the probe made of the block's output is returned too).
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Tensor, Option<Masked>)> {
        let relu = Act { residual: None, relu: true };
        let h = self.bn1.forward_act(rt, &self.conv1.forward(rt, x, train)?, train, relu)?;
        let short = match &self.shortcut {
            Some((conv, bn)) => bn.forward(rt, &conv.forward(rt, x, train)?, train)?,
            None => x.clone(),
        };
        // ReLU(BN(conv2(h)) + shortcut), fused into the batch norm's own dispatches.
        let z = self.bn2.forward_act(rt, &self.conv2.forward(rt, &h, train)?, train, Act { residual: Some(&short), relu: true })?;
        match &self.probe {
            Some(p) => {
                let masked = p.apply(rt, &z, rule, train)?;
                Ok((masked.out.clone(), Some(masked)))
            }
            None => Ok((z, None)),
        }
    }

    fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.bn1, &self.bn2];
        v.extend(self.shortcut.as_ref().map(|(_, bn)| bn));
        v
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.conv1.weight, &self.bn1.weight, &self.bn1.bias, &self.conv2.weight, &self.bn2.weight, &self.bn2.bias];
        if let Some((conv, bn)) = &self.shortcut {
            v.extend([&conv.weight, &bn.weight, &bn.bias]);
        }
        if let Some(p) = &self.probe {
            for l in p.linears() {
                v.extend([&l.weight, &l.bias]);
            }
        }
        v
    }
}

pub struct ResNet18 {
    pub config: ModelConfig,
    pub conv1: Conv,
    pub bn1: BatchNorm,
    /// layer1.0, layer1.1, ..., layer4.1
    pub blocks: Vec<BasicBlock>,
    pub linear: Linear,
}

impl ResNet18 {
    /// A freshly initialised model (PyTorch default initialisation, drawn from `rng`).
    pub fn new(rt: &Runtime, config: ModelConfig, rng: &mut Rng) -> Result<ResNet18> {
        check_setting(config.width >= 1, "width", config.width, "must be at least 1")?;
        check_setting(config.classes >= 2, "classes", config.classes, "a classifier needs at least 2 classes")?;
        let w = config.width;
        let (channels, _) = config.kind.input();
        let conv1 = Conv::new(rt, "conv1", channels, w, 3, 1, rng)?;
        let bn1 = BatchNorm::new(rt, "bn1", w)?;
        let mut blocks = Vec::new();
        let mut cin = w;
        let k = config.classes;
        for (l, (mult, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].into_iter().enumerate() {
            let cout = w * mult;
            for i in 0..config.kind.blocks_per_layer() {
                let name = format!("layer{}.{i}", l + 1);
                let mut block = BasicBlock::new(rt, &name, cin, cout, if i == 0 { stride } else { 1 }, rng)?;
                block.probe = match (config.kind, l) {
                    (ModelKind::ResNet18Cifs, 3) if i == 0 => Some(Probe::nonlinear(rt, &format!("{name}.Probe"), cout, PROBE_HIDDEN, k, rng)?),
                    (ModelKind::ResNet18Cifs, 3) => Some(Probe::linear(rt, &format!("{name}.Probe"), cout, k, rng)?),
                    (ModelKind::ResNet18Cas, 3) => Some(Probe::cas(rt, &name, cout, k, rng)?),
                    (ModelKind::ResNet10Cifs, 2) => Some(Probe::nonlinear(rt, "Probe_0", cout, PROBE_HIDDEN, k, rng)?.scaled(2.0)),
                    (ModelKind::ResNet10Cifs, 3) => Some(Probe::linear(rt, "Probe_1", cout, k, rng)?.scaled(2.0)),
                    _ => None,
                };
                blocks.push(block);
                cin = cout;
            }
        }
        let linear = Linear::new(rt, "linear", 8 * w, config.classes, rng)?;
        Ok(ResNet18 { config, conv1, bn1, blocks, linear })
    }

    /// Forward pass on images x (N, 3, H, W) in [0, 1]. Train mode needs the labels (N,) u32.
    pub fn forward(&self, rt: &Runtime, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> Result<Output> {
        Ok(self.forward_with_taps(rt, x, labels, mode)?.0)
    }

    /// As [`ResNet18::forward`], also returning what the analysis looks at inside the model.
    pub fn forward_with_taps(&self, rt: &Runtime, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> Result<(Output, Taps)> {
        let (channels, side) = self.config.kind.input();
        if x.shape().len() != 4 || x.shape()[1] != channels || x.shape()[2] < side || x.shape()[3] < side {
            return Err(CifsError::InputShape { shape: x.shape().to_vec(), expected: format!("(N, {channels}, {side}, {side}) images for {}", self.config.kind) });
        }
        let train = mode == Mode::Train;
        let rule = match (mode, labels) {
            (Mode::Train, Some(l)) => PairRule::Train(l),
            (Mode::Train, None) => return Err(CifsError::TrainNeedsLabels),
            (Mode::Eval, _) => PairRule::Eval,
        };
        let mut h = self.bn1.forward_act(rt, &self.conv1.forward(rt, x, train)?, train, Act { residual: None, relu: true })?;
        let mut probes = Vec::new();
        let mut blocks = Vec::new();
        for block in &self.blocks {
            let (out, masked) = block.forward(rt, &h, rule, train)?;
            h = out;
            if let Some(m) = masked {
                probes.push(m.logits);
                blocks.push(BlockTap { name: block.name.clone(), pooled: m.pooled, mask: m.mask });
            }
        }
        let pooled = pool::avg_pool2d(rt, &h, 4)?;
        let n = pooled.shape()[0];
        let feat = pooled.numel() / n;
        let features = pooled.reshape(&[n, feat])?;
        let logits = self.linear.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks }))
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.conv1.weight, &self.bn1.weight, &self.bn1.bias];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.extend([&self.linear.weight, &self.linear.bias]);
        v
    }

    /// Every batch-norm layer (their running statistics are model state too).
    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.bn1];
        for b in &self.blocks {
            v.extend(b.batchnorms());
        }
        v
    }
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
