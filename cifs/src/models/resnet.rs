//! ResNet-18 (CIFAR variant) and the reference's ResNet-10, plain, with CIFS or with CAS
//! (docs/DESIGN.md, section 3), under the reference's PyTorch state-dict names.
//!
//! stem conv3x3(in -> w) BN ReLU; layer1..4 of two basic blocks each (ResNet-10: one) at w, 2w,
//! 4w, 8w channels, strides 1, 2, 2, 2; avg_pool2d(4); linear(8w -> classes). In ResNet18-CIFS
//! the two blocks of layer4 mask their output with a probe: block 0 nonlinear, block 1 linear.
//! In ResNet10-CIFS (1x28x28 inputs) layer3's output is masked by a nonlinear probe (`Probe_0`)
//! and layer4's by a linear one (`Probe_1`), both masks scaled by 2.

use engine::ops::batchnorm::Act;
use engine::ops::pool;
use engine::{Rng, Runtime, Tensor};

use crate::error::Result;
use crate::models::family::{Architecture, Depth, Family, ModelConfig, ModelKind, Network, TensorShapes};
use crate::models::layers::{BatchNorm, Conv, Linear, Param};
use crate::models::output::{flatten, BlockTap, Output, ProbedBlock, Taps};
use crate::models::probe::{Masked, PairRule, Probe, PROBE_HIDDEN};

/// The ResNet family: ResNet-18 and ResNet-10, plain, with CIFS or with CAS.
pub struct ResNets;

const ARCHITECTURES: [Architecture; 5] = [
    Architecture {
        name: "resnet18-cifs",
        about: "ResNet-18 with CIFS in both layer4 blocks (the paper's model)",
        input: (3, 32),
        default_width: 64,
        depth: Depth::Fixed(18),
    },
    Architecture { name: "resnet18", about: "Plain ResNet-18 (CIFAR variant)", input: (3, 32), default_width: 64, depth: Depth::Fixed(18) },
    Architecture {
        name: "resnet18-cas",
        about: "ResNet-18 with CAS (channel-wise activation suppressing) in both layer4 blocks: the paper's main baseline",
        input: (3, 32),
        default_width: 64,
        depth: Depth::Fixed(18),
    },
    Architecture {
        name: "resnet10-cifs",
        about: "The reference's ResNet-10 for Fashion-MNIST (1x28x28 inputs) with CIFS after layer3 and layer4, masks scaled by 2",
        input: (1, 28),
        default_width: 64,
        depth: Depth::Fixed(10),
    },
    Architecture {
        name: "resnet10",
        about: "Plain ResNet-10 for Fashion-MNIST (1x28x28 inputs)",
        input: (1, 28),
        default_width: 64,
        depth: Depth::Fixed(10),
    },
];

pub const RESNET18_CIFS: ModelKind = ModelKind::of(&ResNets, &ARCHITECTURES[0]);
pub const RESNET18: ModelKind = ModelKind::of(&ResNets, &ARCHITECTURES[1]);
pub const RESNET18_CAS: ModelKind = ModelKind::of(&ResNets, &ARCHITECTURES[2]);
pub const RESNET10_CIFS: ModelKind = ModelKind::of(&ResNets, &ARCHITECTURES[3]);
pub const RESNET10: ModelKind = ModelKind::of(&ResNets, &ARCHITECTURES[4]);

impl Family for ResNets {
    fn architectures(&self) -> &'static [Architecture] {
        &ARCHITECTURES
    }

    fn build(&self, rt: &Runtime, config: &ModelConfig, rng: &mut Rng) -> Result<Box<dyn Network>> {
        Ok(Box::new(ResNet::new(rt, config, rng)?))
    }

    /// A ResNet has `conv1.weight` and `linear.weight` (8 w -> classes); which one it is follows
    /// from its probes' names and whether layer1 has a second block.
    fn recognise(&self, d: &TensorShapes) -> Option<std::result::Result<ModelConfig, String>> {
        let (conv1, lin) = (d.shape("conv1.weight")?, d.shape("linear.weight")?);
        // Check the ranks before reading any dimension: a malformed file must be an error, not a panic.
        if conv1.len() != 4 || lin.len() != 2 || lin[1] != 8 * conv1[0] {
            return Some(Err(format!("conv1.weight {conv1:?} and linear.weight {lin:?} are not those of a CIFAR ResNet")));
        }
        let kind = if d.has("Probe_0.Probe.0.fc.weight") {
            RESNET10_CIFS
        } else if !d.has("layer1.1.conv1.weight") {
            RESNET10
        } else if d.any_starts_with("layer4.0.Probe.") {
            RESNET18_CIFS
        } else if d.any_starts_with("layer4.0.CAS.") {
            RESNET18_CAS
        } else {
            RESNET18
        };
        if conv1[1] != kind.input().0 {
            return Some(Err(format!("conv1.weight {conv1:?} takes {} input channels; a {kind} takes {}", conv1[1], kind.input().0)));
        }
        Some(Ok(ModelConfig::new(kind, conv1[0], lin[0])))
    }

    /// The first stage's output: `width` channels at the input's side.
    fn widest_map(&self, c: &ModelConfig) -> usize {
        let (_, side) = c.kind.input();
        c.width * side * side
    }

    fn features(&self, c: &ModelConfig) -> usize {
        8 * c.width
    }
}

/// Basic blocks per stage.
fn blocks_per_layer(kind: ModelKind) -> usize {
    if kind == RESNET10_CIFS || kind == RESNET10 {
        1
    } else {
        2
    }
}

/// The projection shortcut of a block whose shape changes: conv 1x1 (stride s) and its BN.
pub struct Shortcut {
    pub conv: Conv,
    pub bn: BatchNorm,
}

/// `ReLU(BN2(conv2(ReLU(BN1(conv1(x))))) + shortcut(x))`, then the CIFS or CAS mask if the
/// block has a probe.
pub struct BasicBlock {
    /// State-dict name (`layer4.0`).
    pub name: String,
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    pub shortcut: Option<Shortcut>,
    /// Masks the block's output.
    pub probe: Option<Probe>,
}

impl BasicBlock {
    fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, stride: u32, rng: &mut Rng) -> Result<BasicBlock> {
        let shortcut = if stride != 1 || cin != cout {
            let conv = Conv::new(rt, &format!("{name}.shortcut.0"), cin, cout, 1, stride, rng)?;
            Some(Shortcut { conv, bn: BatchNorm::new(rt, &format!("{name}.shortcut.1"), cout)? })
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

    /// The block's output and what the probe (if any) made of it.
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Tensor, Option<Masked>)> {
        let relu = Act { residual: None, relu: true };
        let h = self.bn1.forward_act(rt, &self.conv1.forward(rt, x, train)?, train, relu)?;
        let short = match &self.shortcut {
            Some(s) => s.bn.forward(rt, &s.conv.forward(rt, x, train)?, train)?,
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
        v.extend(self.shortcut.as_ref().map(|s| &s.bn));
        v
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.conv1.weight, &self.bn1.weight, &self.bn1.bias, &self.conv2.weight, &self.bn2.weight, &self.bn2.bias];
        if let Some(s) = &self.shortcut {
            v.extend([&s.conv.weight, &s.bn.weight, &s.bn.bias]);
        }
        for l in self.probe.iter().flat_map(Probe::linears) {
            v.extend([&l.weight, &l.bias]);
        }
        v
    }
}

/// ResNet-18 or ResNet-10, plain, with CIFS or with CAS.
pub struct ResNet {
    /// `conv1`
    pub stem: Conv,
    /// `bn1`
    pub stem_bn: BatchNorm,
    /// layer1.0, layer1.1, ..., layer4.1 (ResNet-10: layer1.0, ..., layer4.0).
    pub blocks: Vec<BasicBlock>,
    /// `linear`
    pub classifier: Linear,
}

impl ResNet {
    /// A freshly initialised network (PyTorch's default initialisation, drawn from `rng`).
    pub fn new(rt: &Runtime, config: &ModelConfig, rng: &mut Rng) -> Result<ResNet> {
        let (w, k) = (config.width, config.classes);
        let (channels, _) = config.kind.input();
        let kind = config.kind;
        let stem = Conv::new(rt, "conv1", channels, w, 3, 1, rng)?;
        let stem_bn = BatchNorm::new(rt, "bn1", w)?;
        let mut blocks = Vec::new();
        let mut cin = w;
        for (l, (mult, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].into_iter().enumerate() {
            let cout = w * mult;
            for i in 0..blocks_per_layer(kind) {
                let name = format!("layer{}.{i}", l + 1);
                let mut block = BasicBlock::new(rt, &name, cin, cout, if i == 0 { stride } else { 1 }, rng)?;
                block.probe = match l {
                    3 if kind == RESNET18_CIFS && i == 0 => {
                        Some(Probe::nonlinear(rt, &format!("{name}.Probe"), cout, PROBE_HIDDEN, k, rng)?)
                    }
                    3 if kind == RESNET18_CIFS => Some(Probe::linear(rt, &format!("{name}.Probe"), cout, k, rng)?),
                    3 if kind == RESNET18_CAS => Some(Probe::cas(rt, &name, cout, k, rng)?),
                    2 if kind == RESNET10_CIFS => Some(Probe::nonlinear(rt, "Probe_0", cout, PROBE_HIDDEN, k, rng)?.scaled(2.0)),
                    3 if kind == RESNET10_CIFS => Some(Probe::linear(rt, "Probe_1", cout, k, rng)?.scaled(2.0)),
                    _ => None,
                };
                blocks.push(block);
                cin = cout;
            }
        }
        let classifier = Linear::new(rt, "linear", 8 * w, k, rng)?;
        Ok(ResNet { stem, stem_bn, blocks, classifier })
    }
}

impl Network for ResNet {
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Output, Taps)> {
        let relu = Act { residual: None, relu: true };
        let mut h = self.stem_bn.forward_act(rt, &self.stem.forward(rt, x, train)?, train, relu)?;
        let mut probes = Vec::new();
        let mut taps = Vec::new();
        for block in &self.blocks {
            let (out, masked) = block.forward(rt, &h, rule, train)?;
            h = out;
            if let Some(m) = masked {
                probes.push(m.logits);
                taps.push(BlockTap { name: block.name.clone(), pooled: m.pooled, mask: m.mask });
            }
        }
        let features = flatten(&pool::avg_pool2d(rt, &h, 4)?)?;
        let logits = self.classifier.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks: taps }))
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.stem.weight, &self.stem_bn.weight, &self.stem_bn.bias];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.extend([&self.classifier.weight, &self.classifier.bias]);
        v
    }

    fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.stem_bn];
        for b in &self.blocks {
            v.extend(b.batchnorms());
        }
        v
    }

    fn classifier(&self) -> &Linear {
        &self.classifier
    }

    /// The blocks with a probe, in order, and the channels each masks (its output's).
    fn probed_blocks(&self) -> Vec<ProbedBlock> {
        let probed = self.blocks.iter().filter(|b| b.probe.is_some());
        probed.map(|b| ProbedBlock { name: b.name.clone(), channels: b.bn2.weight.leaf().numel() }).collect()
    }
}
