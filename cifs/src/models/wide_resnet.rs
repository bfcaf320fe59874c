//! The pre-activation WideResNet-depth-k, plain or with CIFS (docs/DESIGN.md, section 3), under
//! the reference's state-dict names (`conv1`, `block{g}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}`,
//! `bn1`, `fc`, the probes' `...Probe.Probe.{0.fc,1}`).
//!
//! stem conv 3 -> 16 (no BN, no ReLU); three groups of n = (depth - 4) / 6 pre-activation blocks
//! at 16k, 32k, 64k channels, strides 1, 2, 2; final BN-ReLU; avg-pool 8; fc. With CIFS, the
//! last block of block3 masks its residual branch's activated input (nonlinear probe, hidden
//! 240) and a linear probe masks the head after the final BN-ReLU.

use engine::ops::batchnorm::Act;
use engine::ops::{arith, pool};
use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, Result};
use crate::models::family::{Architecture, Depth, Family, ModelConfig, ModelKind, Network, TensorShapes};
use crate::models::layers::{BatchNorm, Conv, Linear, Param};
use crate::models::output::{flatten, BlockTap, Output, ProbedBlock, Taps};
use crate::models::probe::{Masked, PairRule, Probe};

/// The pre-activation WideResNet family, plain or with CIFS.
pub struct WideResNets;

const ARCHITECTURES: [Architecture; 2] = [
    Architecture {
        name: "wrn-cifs",
        about: "Pre-activation WideResNet (--depth, --width the widen factor; WRN-28-10 by default) with CIFS inside the last block of block3 (nonlinear probe, hidden 240) and after the final BN-ReLU (linear)",
        input: (3, 32),
        default_width: 10,
        depth: Depth::Chosen { default: 28 },
    },
    Architecture {
        name: "wrn",
        about: "Pre-activation WideResNet",
        input: (3, 32),
        default_width: 10,
        depth: Depth::Chosen { default: 28 },
    },
];

pub const WRN_CIFS: ModelKind = ModelKind::of(&WideResNets, &ARCHITECTURES[0]);
pub const WRN: ModelKind = ModelKind::of(&WideResNets, &ARCHITECTURES[1]);

impl Family for WideResNets {
    fn architectures(&self) -> &'static [Architecture] {
        &ARCHITECTURES
    }

    fn build(&self, rt: &Runtime, config: &ModelConfig, rng: &mut Rng) -> Result<Box<dyn Network>> {
        Ok(Box::new(WideResNet::new(rt, config, rng)?))
    }

    /// A WideResNet has `block1.layer.0.conv1.weight` (3 x 3 from 16 to 16 k channels) and `fc.weight`
    /// (64 k -> classes); the depth follows from block1's blocks, CIFS from the head probe's name.
    fn recognise(&self, d: &TensorShapes) -> Option<std::result::Result<ModelConfig, String>> {
        let b1 = d.shape("block1.layer.0.conv1.weight")?;
        let fc = match d.need("fc.weight") {
            Ok(fc) => fc,
            Err(why) => return Some(Err(why)),
        };
        if b1.len() != 4 || b1[0] % 16 != 0 || fc.len() != 2 || fc[1] != 4 * b1[0] {
            return Some(Err(format!("block1.layer.0.conv1.weight {b1:?} and fc.weight {fc:?} are not those of a WideResNet")));
        }
        let n = (0..).take_while(|i| d.has(&format!("block1.layer.{i}.conv1.weight"))).count();
        let kind = if d.has("Probe.Probe.1.weight") { WRN_CIFS } else { WRN };
        Some(Ok(ModelConfig { kind, width: b1[0] / 16, classes: fc[0], depth: 6 * n + 4 }))
    }

    /// The first group's output: 16 k channels at the input's side.
    fn widest_map(&self, c: &ModelConfig) -> usize {
        let (_, side) = c.kind.input();
        16 * c.width * side * side
    }

    fn features(&self, c: &ModelConfig) -> usize {
        64 * c.width
    }

    fn describe(&self, c: &ModelConfig) -> String {
        format!("{}-{}-{} with {} classes", c.kind, c.depth, c.width, c.classes)
    }
}

/// Hidden width of the WideResNet's nonlinear probe.
pub const WRN_PROBE_HIDDEN: usize = 240;

/// `a = ReLU(BN1(x))`; the probe (if any) masks `a`; `y = shortcut + conv2(ReLU(BN2(conv1(a~))))`,
/// the shortcut being `convShortcut(a)` (1x1, no BN) when the channels change and the raw `x`
/// otherwise.
pub struct PreActBlock {
    /// State-dict name (`block3.layer.3`).
    pub name: String,
    pub bn1: BatchNorm,
    pub conv1: Conv,
    pub bn2: BatchNorm,
    pub conv2: Conv,
    /// `convShortcut`
    pub shortcut: Option<Conv>,
    /// Masks the activated input of the residual branch.
    pub probe: Option<Probe>,
}

impl PreActBlock {
    /// He-normal convolutions, as the reference initialises them.
    fn new(rt: &Runtime, name: &str, cin: usize, cout: usize, stride: u32, rng: &mut Rng) -> Result<PreActBlock> {
        let shortcut =
            if cin != cout { Some(Conv::he_normal(rt, &format!("{name}.convShortcut"), cin, cout, 1, stride, rng)?) } else { None };
        Ok(PreActBlock {
            name: name.to_string(),
            bn1: BatchNorm::new(rt, &format!("{name}.bn1"), cin)?,
            conv1: Conv::he_normal(rt, &format!("{name}.conv1"), cin, cout, 3, stride, rng)?,
            bn2: BatchNorm::new(rt, &format!("{name}.bn2"), cout)?,
            conv2: Conv::he_normal(rt, &format!("{name}.conv2"), cout, cout, 3, 1, rng)?,
            shortcut,
            probe: None,
        })
    }

    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Tensor, Option<Masked>)> {
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
            Some(conv) => conv.forward(rt, &a, train)?,
            None => x.clone(),
        };
        Ok((arith::add(rt, &y, &short)?, masked))
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.bn1.weight, &self.bn1.bias, &self.conv1.weight, &self.bn2.weight, &self.bn2.bias, &self.conv2.weight];
        v.extend(self.shortcut.as_ref().map(|c| &c.weight));
        for l in self.probe.iter().flat_map(Probe::linears) {
            v.extend([&l.weight, &l.bias]);
        }
        v
    }
}

/// The pre-activation WideResNet, plain or with CIFS.
pub struct WideResNet {
    /// `conv1`: no BN or ReLU after it.
    pub stem: Conv,
    /// block1.layer.0, ..., block3.layer.{n-1}
    pub blocks: Vec<PreActBlock>,
    /// `bn1`: the BN of the final BN-ReLU, before the head.
    pub final_bn: BatchNorm,
    /// WideResNet-CIFS: the linear probe after the final BN-ReLU (`Probe.Probe.1`).
    pub head_probe: Option<Probe>,
    /// `fc`
    pub classifier: Linear,
}

impl WideResNet {
    /// A freshly initialised network: He-normal convolutions, BN at (1, 0), linear weights
    /// PyTorch's default and biases zero, as the reference initialises it.
    pub fn new(rt: &Runtime, config: &ModelConfig, rng: &mut Rng) -> Result<WideResNet> {
        let (k, depth, classes) = (config.width, config.depth, config.classes);
        check_setting(
            depth >= 10 && (depth - 4) % 6 == 0,
            "depth",
            depth,
            "a WideResNet's depth is 6 n + 4 with n >= 1 (16, 22, 28, ...)",
        )?;
        let n = (depth - 4) / 6;
        let cifs = config.kind == WRN_CIFS;
        let stem = Conv::he_normal(rt, "conv1", 3, 16, 3, 1, rng)?;
        let mut blocks = Vec::new();
        let mut cin = 16;
        for (g, (cout, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)].into_iter().enumerate() {
            for i in 0..n {
                let name = format!("block{}.layer.{i}", g + 1);
                let mut block = PreActBlock::new(rt, &name, cin, cout, if i == 0 { stride } else { 1 }, rng)?;
                if cifs && g == 2 && i == n - 1 {
                    // It masks the block's activated input: cin channels (cout unless n = 1).
                    block.probe = Some(Probe::nonlinear(rt, &format!("{name}.Probe"), cin, WRN_PROBE_HIDDEN, classes, rng)?);
                }
                blocks.push(block);
                cin = cout;
            }
        }
        let final_bn = BatchNorm::new(rt, "bn1", 64 * k)?;
        let classifier = Linear::new(rt, "fc", 64 * k, classes, rng)?.zero_bias(rt)?;
        let head_probe = if cifs { Some(Probe::linear(rt, "Probe", 64 * k, classes, rng)?) } else { None };
        Ok(WideResNet { stem, blocks, final_bn, head_probe, classifier })
    }
}

impl Network for WideResNet {
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Output, Taps)> {
        let mut h = self.stem.forward(rt, x, train)?;
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
        h = self.final_bn.forward_act(rt, &h, train, Act { residual: None, relu: true })?;
        if let Some(p) = &self.head_probe {
            let m = p.apply(rt, &h, rule, train)?;
            probes.push(m.logits);
            taps.push(BlockTap { name: "head".into(), pooled: m.pooled, mask: m.mask });
            h = m.out;
        }
        let features = flatten(&pool::avg_pool2d(rt, &h, 8)?)?;
        let logits = self.classifier.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks: taps }))
    }

    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.stem.weight];
        for b in &self.blocks {
            v.extend(b.params());
        }
        v.extend([&self.final_bn.weight, &self.final_bn.bias, &self.classifier.weight, &self.classifier.bias]);
        for l in self.head_probe.iter().flat_map(Probe::linears) {
            v.extend([&l.weight, &l.bias]);
        }
        v
    }

    fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.final_bn];
        for b in &self.blocks {
            v.extend([&b.bn1, &b.bn2]);
        }
        v
    }

    fn classifier(&self) -> &Linear {
        &self.classifier
    }

    /// The blocks with a probe, in order, and the channels each masks (the block's input's; the
    /// head probe is not a block).
    fn probed_blocks(&self) -> Vec<ProbedBlock> {
        let probed = self.blocks.iter().filter(|b| b.probe.is_some());
        probed.map(|b| ProbedBlock { name: b.name.clone(), channels: b.bn1.weight.leaf().numel() }).collect()
    }
}
