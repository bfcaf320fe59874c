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

use super::layers::{BatchNorm, Conv, Linear, Param};
use super::probe::{Masked, PairRule, Probe};
use super::{BlockTap, ModelConfig, ModelKind, Output, ProbedBlock, Taps};
use crate::error::{check_setting, Result};

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
        let cifs = config.kind == ModelKind::WrnCifs;
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

    pub(super) fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Output, Taps)> {
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
        let features = super::flatten(&pool::avg_pool2d(rt, &h, 8)?)?;
        let logits = self.classifier.forward(rt, &features, train)?;
        Ok((Output { logits, probes }, Taps { features, blocks: taps }))
    }

    /// Every trainable parameter, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
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

    pub fn batchnorms(&self) -> Vec<&BatchNorm> {
        let mut v = vec![&self.final_bn];
        for b in &self.blocks {
            v.extend([&b.bn1, &b.bn2]);
        }
        v
    }

    /// The blocks with a probe, in order, and the channels each masks (the block's input's; the
    /// head probe is not a block).
    pub fn probed_blocks(&self) -> Vec<ProbedBlock> {
        let probed = self.blocks.iter().filter(|b| b.probe.is_some());
        probed.map(|b| ProbedBlock { name: b.name.clone(), channels: b.bn1.weight.leaf().numel() }).collect()
    }
}
