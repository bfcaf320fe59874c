//! What a model family is to the rest of the program. A family (one file: `resnet`,
//! `wide_resnet`) names its architectures, builds a network of one, and recognises a state dict
//! of its own; `models::registry` lists the families, one line each. Everything else (training,
//! attacks, analysis, checkpoints) sees a [`crate::models::Model`]: a [`ModelConfig`] and a
//! [`Network`].

use std::collections::BTreeMap;

use engine::{Rng, Runtime, Tensor};

use crate::error::{CifsError, Result};
use crate::models::layers::{BatchNorm, Linear, Param};
use crate::models::output::{Output, ProbedBlock, Taps};
use crate::models::probe::PairRule;

/// One architecture of a family, as the command line and `config.json` name it.
#[derive(Debug)]
pub struct Architecture {
    /// `resnet18-cifs`, ...
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The images it takes: (channels, side).
    pub input: (usize, usize),
    /// `width` when none is given (the ResNets' first-stage channels, the WideResNet's widen
    /// factor).
    pub default_width: usize,
    pub depth: Depth,
}

/// An architecture's depth: fixed by it, or chosen (`--depth`) with a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Fixed(usize),
    Chosen { default: usize },
}

/// A family of networks.
pub trait Family: Sync {
    /// The architectures it builds.
    fn architectures(&self) -> &'static [Architecture];

    /// A freshly initialised network of `config` (one of this family's architectures), its
    /// initialisation drawn from `rng`.
    fn build(&self, rt: &Runtime, config: &ModelConfig, rng: &mut Rng) -> Result<Box<dyn Network>>;

    /// The model a state dict (names without any `module.` prefix, with their shapes) holds when
    /// it is one of this family's: `None` when its signature names are not there, an error (why
    /// not) when they are but the shapes make no model of the family.
    fn recognise(&self, dict: &TensorShapes) -> Option<std::result::Result<ModelConfig, String>>;

    /// Floats of the largest feature map of one image (what bounds the batch on an adapter).
    fn widest_map(&self, config: &ModelConfig) -> usize;

    /// Channels the classifier reads.
    fn features(&self, config: &ModelConfig) -> usize;

    /// The model in messages (`resnet18 of width 64 with 10 classes`).
    fn describe(&self, c: &ModelConfig) -> String {
        format!("{} of width {} with {} classes", c.kind, c.width, c.classes)
    }
}

/// A network of one family: the forward pass and the tensors it holds, under the reference's
/// state-dict names.
pub trait Network {
    /// The forward pass on images `x`, the probes' pairs chosen by `rule`; `train`: batch
    /// statistics and gradients into the parameters. Also what the analysis looks at inside.
    fn forward(&self, rt: &Runtime, x: &Tensor, rule: PairRule, train: bool) -> Result<(Output, Taps)>;
    /// Every trainable parameter, in state-dict order.
    fn params(&self) -> Vec<&Param>;
    /// Every batch-norm layer (their running statistics are model state too).
    fn batchnorms(&self) -> Vec<&BatchNorm>;
    /// The final linear layer.
    fn classifier(&self) -> &Linear;
    /// The blocks with a CIFS or CAS probe, in probe order.
    fn probed_blocks(&self) -> Vec<ProbedBlock>;
}

/// The names and shapes of a state dict's tensors.
pub struct TensorShapes(pub BTreeMap<String, Vec<usize>>);

impl TensorShapes {
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).map(Vec::as_slice)
    }

    /// The shape of `name`, or why it is not there.
    pub fn need(&self, name: &str) -> std::result::Result<&[usize], String> {
        self.shape(name).ok_or_else(|| format!("no `{name}`"))
    }

    pub fn any_starts_with(&self, prefix: &str) -> bool {
        self.0.keys().any(|n| n.starts_with(prefix))
    }
}

/// An architecture and its family: what `--model` and `config.json`'s `model` name. Compared,
/// printed and serialised by name.
#[derive(Clone, Copy)]
pub struct ModelKind {
    arch: &'static Architecture,
    family: &'static dyn Family,
}

impl ModelKind {
    /// `arch` of `family` (a family's constants are made with this).
    pub const fn of(family: &'static dyn Family, arch: &'static Architecture) -> ModelKind {
        ModelKind { arch, family }
    }

    pub fn name(self) -> &'static str {
        self.arch.name
    }

    pub fn about(self) -> &'static str {
        self.arch.about
    }

    pub fn family(self) -> &'static dyn Family {
        self.family
    }

    /// The images the architecture is built for: (channels, side).
    pub fn input(self) -> (usize, usize) {
        self.arch.input
    }

    /// `width` when none is given.
    pub fn default_width(self) -> usize {
        self.arch.default_width
    }

    /// Depth when none is given (the fixed one where it cannot be chosen).
    pub fn default_depth(self) -> usize {
        match self.arch.depth {
            Depth::Fixed(d) | Depth::Chosen { default: d } => d,
        }
    }

    /// Whether `--depth` chooses this architecture's depth (the WideResNets) or it is fixed.
    pub fn depth_is_chosen(self) -> bool {
        matches!(self.arch.depth, Depth::Chosen { .. })
    }

    /// Refuses a chosen depth for an architecture whose depth is fixed.
    pub fn check_depth(self, depth: Option<usize>) -> Result<()> {
        match (depth, self.arch.depth) {
            (Some(d), Depth::Fixed(fixed)) => Err(CifsError::Invalid(format!(
                "--depth {d}: {self} has a fixed depth ({fixed}); choose a model whose depth can be chosen"
            ))),
            _ => Ok(()),
        }
    }
}

impl PartialEq for ModelKind {
    fn eq(&self, other: &ModelKind) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ModelKind {}

impl std::fmt::Debug for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for ModelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
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
    /// Only an architecture whose depth can be chosen takes one.
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
        self.kind.family().widest_map(self)
    }

    /// Channels the classifier reads.
    pub fn features(&self) -> usize {
        self.kind.family().features(self)
    }

    /// The model in messages.
    pub fn describe(&self) -> String {
        self.kind.family().describe(self)
    }
}
