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

use super::layers::{BatchNorm, Conv, Linear, Param};
use super::probe::{Masked, PairRule, Probe, PROBE_HIDDEN};
use super::{BlockTap, ModelConfig, ModelKind, Output, ProbedBlock, Taps};
use crate::error::Result;

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
        let stem = Conv::new(rt, "conv1", channels, w, 3, 1, rng)?;
        let stem_bn = BatchNorm::new(rt, "bn1", w)?;
        let mut blocks = Vec::new();
        let mut cin = w;
        for (l, (mult, stride)) in [(1, 1), (2, 2), (4, 2), (8, 2)].into_iter().enumerate() {
            let cout = w * mult;
            for i in 0..config.kind.blocks_per_layer() {
                let name = format!("layer{}.{i}", l + 1);
                let mut block = BasicBlock::new(rt, &name, cin, cout, if i == 0 { stride } else { 1 }, rng)?;
                block.probe = match (config.kind, l) {
                    (ModelKind::ResNet18Cifs, 3) if i == 0 => {
                        Some(Probe::nonlinear(rt, &format!("{name}.Probe"), cout, PROBE_HIDDEN, k, rng)?)
                    }
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
        let classifier = Linear::new(rt, "linear", 8 * w, k, rng)?;
        Ok(ResNet { stem, stem_bn, blocks, classifier })
    }

    pub(super) fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Output, Taps)> {
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
        let features = super::flatten(&pool::avg_pool2d(rt, &h, 4)?)?;
        let logits = self.classifier.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks: taps }))
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.stem.weight, &self.stem_bn.weight, &self.stem_bn.bias];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.extend([&self.classifier.weight, &self.classifier.bias]);
        v
    }

    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.stem_bn];
        for b in &self.blocks {
            v.extend(b.batchnorms());
        }
        v
    }

    /// The blocks with a probe, in order, and the channels each masks (its output's).
    pub fn probed_blocks(&self) -> Vec<ProbedBlock> {
        let probed = self.blocks.iter().filter(|b| b.probe.is_some());
        probed.map(|b| ProbedBlock { name: b.name.clone(), channels: b.bn2.weight.leaf().numel() }).collect()
    }
}
