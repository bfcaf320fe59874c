//! The models, one [`Model`] type: ResNet-18 (CIFAR variant) and ResNet18-CIFS (DESIGN §3), the
//! reference's ResNet-10 for Fashion-MNIST (DESIGN-SETUPS §2) and the pre-activation WideResNet
//! (DESIGN-SETUPS §1), all with the reference's PyTorch state-dict names.
//!
//! stem conv3x3(in->w) BN ReLU; layer1..4 of two BasicBlocks each (ResNet-10: one) (w, 2w, 4w,
//! 8w channels, strides 1, 2, 2, 2); avg_pool2d(4); linear(8w -> classes). In ResNet18-CIFS the
//! two blocks of layer4 mask their output with a probe: block 0 nonlinear, block 1 linear. In
//! ResNet10-CIFS (1x28x28 inputs) layer3's output is masked by a nonlinear probe (`Probe_0`) and
//! layer4's by a linear one (`Probe_1`), both masks scaled by 2.

use engine::ops::batchnorm::Act;
use engine::ops::{arith, pool};
use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, CifsError, Result};
use crate::layers::{BatchNorm, Conv, Linear, Param};
use crate::probe::{Masked, PairRule, Probe, PROBE_HIDDEN};

/// Hidden width of the WideResNet's nonlinear probe.
pub const WRN_PROBE_HIDDEN: usize = 240;

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
    pub const ALL: [ModelKind; 7] = [ModelKind::ResNet18Cifs, ModelKind::ResNet18, ModelKind::ResNet18Cas, ModelKind::ResNet10Cifs, ModelKind::ResNet10, ModelKind::WrnCifs, ModelKind::Wrn];

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
        if self.is_wrn() { 10 } else { 64 }
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
        if self.kind.is_wrn() { 64 * self.width } else { 8 * self.width }
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

pub struct BasicBlock {
    /// State-dict name (`layer4.0`).
    pub name: String,
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    /// The projection shortcut: conv 1x1 and (ResNets) its batch norm.
    pub shortcut: Option<(Conv, Option<BatchNorm>)>,
    /// ResNets: the probe masks the block's output. WideResNet: it masks the activated input of
    /// the residual branch.
    pub probe: Option<Probe>,
    /// Pre-activation (WideResNet): BN-ReLU before each conv, no BN on the shortcut.
    pub preact: bool,
}

impl BasicBlock {
    fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, stride: u32, rng: &mut Rng) -> Result<BasicBlock> {
        let shortcut = if stride != 1 || cin != cout {
            Some((Conv::new(rt, &format!("{name}.shortcut.0"), cin, cout, 1, stride, rng)?, Some(BatchNorm::new(rt, &format!("{name}.shortcut.1"), cout)?)))
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
            preact: false,
        })
    }

    /// The WideResNet's pre-activation block (reference names: `bn1`, `conv1`, `bn2`, `conv2`,
    /// `convShortcut`), He-normal convolutions.
    fn preact(rt: &Runtime, name: &str, cin: usize, cout: usize, stride: u32, rng: &mut Rng) -> Result<BasicBlock> {
        let shortcut = if cin != cout { Some((Conv::he_normal(rt, &format!("{name}.convShortcut"), cin, cout, 1, stride, rng)?, None)) } else { None };
        Ok(BasicBlock {
            name: name.to_string(),
            bn1: BatchNorm::new(rt, &format!("{name}.bn1"), cin)?,
            conv1: Conv::he_normal(rt, &format!("{name}.conv1"), cin, cout, 3, stride, rng)?,
            bn2: BatchNorm::new(rt, &format!("{name}.bn2"), cout)?,
            conv2: Conv::he_normal(rt, &format!("{name}.conv2"), cout, cout, 3, 1, rng)?,
            shortcut,
            probe: None,
            preact: true,
        })
    }

    /// Pre-activation: a = ReLU(BN1(x)); the probe (if any) masks a; y = shortcut +
    /// conv2(ReLU(BN2(conv1(a~)))), the shortcut being conv1x1(a) when the channels change and
    /// the raw x otherwise.
    fn forward_preact(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Tensor, Option<Masked>)> {
        let relu = Act { residual: None, relu: true };
        let a = self.bn1.forward_act(rt, x, train, relu)?;
        let (branch_in, masked) = match &self.probe {
            Some(p) => {
                let m = p.apply(rt, &a, rule, train)?;
                (m.out.clone(), Some(m))
            }
            None => (a.clone(), None),
        };
        let h = self.bn2.forward_act(rt, &self.conv1.forward(rt, &branch_in, train)?, train, relu)?;
        let y = self.conv2.forward(rt, &h, train)?;
        let short = match &self.shortcut {
            Some((conv, _)) => conv.forward(rt, &a, train)?,
            None => x.clone(),
        };
        Ok((arith::add(rt, &y, &short)?, masked))
    }

    /// ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)), then the CIFS mask if this block has a
    /// probe (what the probe made of the block's output is returned too).
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Tensor, Option<Masked>)> {
        if self.preact {
            return self.forward_preact(rt, x, rule, train);
        }
        let relu = Act { residual: None, relu: true };
        let h = self.bn1.forward_act(rt, &self.conv1.forward(rt, x, train)?, train, relu)?;
        let short = match &self.shortcut {
            Some((conv, Some(bn))) => bn.forward(rt, &conv.forward(rt, x, train)?, train)?,
            Some((conv, None)) => conv.forward(rt, x, train)?,
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

    /// Channels of the map the probe masks: the block's output (ResNets) or its input
    /// (pre-activation).
    pub fn probed_channels(&self) -> usize {
        if self.preact { self.bn1.weight.leaf().numel() } else { self.bn2.weight.leaf().numel() }
    }

    fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.bn1, &self.bn2];
        v.extend(self.shortcut.as_ref().and_then(|(_, bn)| bn.as_ref()));
        v
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = if self.preact {
            vec![&self.bn1.weight, &self.bn1.bias, &self.conv1.weight, &self.bn2.weight, &self.bn2.bias, &self.conv2.weight]
        } else {
            vec![&self.conv1.weight, &self.bn1.weight, &self.bn1.bias, &self.conv2.weight, &self.bn2.weight, &self.bn2.bias]
        };
        if let Some((conv, bn)) = &self.shortcut {
            v.push(&conv.weight);
            if let Some(bn) = bn {
                v.extend([&bn.weight, &bn.bias]);
            }
        }
        if let Some(p) = &self.probe {
            for l in p.linears() {
                v.extend([&l.weight, &l.bias]);
            }
        }
        v
    }
}

/// One of the model families: ResNet-18/10 (with CIFS or CAS) or the pre-activation WideResNet.
pub struct Model {
    pub config: ModelConfig,
    /// The stem convolution.
    pub conv1: Conv,
    /// ResNets: the stem's batch norm. WideResNet: the final one (before the head), its `bn1`.
    pub bn1: BatchNorm,
    /// layer1.0, layer1.1, ..., layer4.1 (WideResNet: block1.layer.0, ..., block3.layer.{n-1})
    pub blocks: Vec<BasicBlock>,
    /// The classifier (`linear`; WideResNet: `fc`).
    pub linear: Linear,
    /// WideResNet-CIFS: the linear probe after the final BN-ReLU (`Probe.Probe.1`).
    pub head_probe: Option<Probe>,
}

impl Model {
    /// A freshly initialised model (PyTorch default initialisation, drawn from `rng`).
    pub fn new(rt: &Runtime, config: ModelConfig, rng: &mut Rng) -> Result<Model> {
        check_setting(config.width >= 1, "width", config.width, "must be at least 1")?;
        check_setting(config.classes >= 2, "classes", config.classes, "a classifier needs at least 2 classes")?;
        if config.kind.is_wrn() {
            return Model::wide(rt, config, rng);
        }
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
        Ok(Model { config, conv1, bn1, blocks, linear, head_probe: None })
    }

    /// The pre-activation WideResNet-depth-k (DESIGN-SETUPS §1): stem conv 3->16 (no BN), three
    /// groups of n = (depth - 4) / 6 blocks (16k, 32k, 64k channels, strides 1, 2, 2), final
    /// BN-ReLU, avg-pool 8, fc. With CIFS: the last block of block3 masks its branch's input
    /// (nonlinear probe, hidden 240) and a linear probe masks the head.
    fn wide(rt: &Runtime, config: ModelConfig, rng: &mut Rng) -> Result<Model> {
        let (k, depth, classes) = (config.width, config.depth, config.classes);
        check_setting(depth >= 10 && (depth - 4) % 6 == 0, "depth", depth, "a WideResNet's depth is 6 n + 4 with n >= 1 (16, 22, 28, ...)")?;
        let n = (depth - 4) / 6;
        let cifs = config.kind == ModelKind::WrnCifs;
        let conv1 = Conv::he_normal(rt, "conv1", 3, 16, 3, 1, rng)?;
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (g, (cout, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)].into_iter().enumerate() {
            for i in 0..n {
                let name = format!("block{}.layer.{i}", g + 1);
                let mut block = BasicBlock::preact(rt, &name, cin, cout, if i == 0 { stride } else { 1 }, rng)?;
                if cifs && g == 2 && i == n - 1 {
                    // It masks the block's activated input: cin channels (cout unless n = 1).
                    block.probe = Some(Probe::nonlinear(rt, &format!("{name}.Probe"), cin, WRN_PROBE_HIDDEN, classes, rng)?);
                }
                blocks.push(block);
                cin = cout;
            }
        }
        let bn1 = BatchNorm::new(rt, "bn1", 64 * k)?;
        let linear = Linear::new(rt, "fc", 64 * k, classes, rng)?.zero_bias(rt)?;
        let head_probe = if cifs { Some(Probe::linear(rt, "Probe", 64 * k, classes, rng)?) } else { None };
        Ok(Model { config, conv1, bn1, blocks, linear, head_probe })
    }

    /// Forward pass on images x (N, 3, H, W) in [0, 1]. Train mode needs the labels (N,) u32.
    pub fn forward(&self, rt: &Runtime, x: &Tensor, labels: Option<&Tensor>, mode: Mode) -> Result<Output> {
        Ok(self.forward_with_taps(rt, x, labels, mode)?.0)
    }

    /// As [`Model::forward`], also returning what the analysis looks at inside the model.
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
        let relu = Act { residual: None, relu: true };
        let wide = self.config.kind.is_wrn();
        let stem = self.conv1.forward(rt, x, train)?;
        let mut h = if wide { stem } else { self.bn1.forward_act(rt, &stem, train, relu)? };
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
        if wide {
            h = self.bn1.forward_act(rt, &h, train, relu)?;
            if let Some(p) = &self.head_probe {
                let m = p.apply(rt, &h, rule, train)?;
                probes.push(m.logits);
                blocks.push(BlockTap { name: "head".into(), pooled: m.pooled, mask: m.mask });
                h = m.out;
            }
        }
        let pooled = pool::avg_pool2d(rt, &h, if wide { 8 } else { 4 })?;
        let n = pooled.shape()[0];
        let feat = pooled.numel() / n;
        let features = pooled.reshape(&[n, feat])?;
        let logits = self.linear.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks }))
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        let wide = self.config.kind.is_wrn();
        let mut v = vec![&self.conv1.weight];
        if !wide {
            v.extend([&self.bn1.weight, &self.bn1.bias]);
        }
        for b in &self.blocks {
            v.extend(b.params());
        }
        if wide {
            v.extend([&self.bn1.weight, &self.bn1.bias]);
        }
        v.extend([&self.linear.weight, &self.linear.bias]);
        for l in self.head_probe.iter().flat_map(|p| p.linears()) {
            v.extend([&l.weight, &l.bias]);
        }
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
