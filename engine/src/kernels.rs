//! The registry of WGSL kernel families. Every shader enters the engine here, through
//! `include_str!`, so tests, benches and the runtime compile exactly the same text.

/// One WGSL file = one kernel family (see each file's header for its entry points and bindings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Activation,
    Arith,
    Attack,
    BatchNorm,
    ChannelScale,
    Conv2d,
    CrossEntropy,
    DlrLoss,
    Index,
    KlDiv,
    MarginLoss,
    Optim,
    Pool,
    Random,
    Reduce,
    Softmax,
}

/// WGSL shared by several families (WGSL has no include): the file name of each such text.
#[cfg(test)]
pub(crate) const SHARED_SOURCES: [&str; 2] = ["workgroup_sum.wgsl", "div_exact.wgsl"];

/// A family's source after a shared text it uses (`shared`, a file of SHARED_SOURCES).
macro_rules! after_shared {
    ($shared:literal, $file:literal) => {
        concat!(include_str!(concat!("../../shaders/", $shared)), include_str!($file))
    };
}

impl Shader {
    #[cfg(test)]
    pub const ALL: [Shader; 16] = [
        Shader::Activation,
        Shader::Arith,
        Shader::Attack,
        Shader::BatchNorm,
        Shader::ChannelScale,
        Shader::Conv2d,
        Shader::CrossEntropy,
        Shader::DlrLoss,
        Shader::Index,
        Shader::KlDiv,
        Shader::MarginLoss,
        Shader::Optim,
        Shader::Pool,
        Shader::Random,
        Shader::Reduce,
        Shader::Softmax,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Activation => "activation.wgsl",
            Shader::Arith => "arith.wgsl",
            Shader::Attack => "attack.wgsl",
            Shader::BatchNorm => "batchnorm.wgsl",
            Shader::ChannelScale => "channel_scale.wgsl",
            Shader::Conv2d => "conv2d.wgsl",
            Shader::CrossEntropy => "cross_entropy.wgsl",
            Shader::DlrLoss => "dlr_loss.wgsl",
            Shader::Index => "index.wgsl",
            Shader::KlDiv => "kl_div.wgsl",
            Shader::MarginLoss => "margin_loss.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Random => "random.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Softmax => "softmax.wgsl",
        }
    }

    /// The specialisations the engine compiles this family with, besides the source as written
    /// (the pipeline cache refuses any other, and a test validates each).
    pub fn specialisations(self) -> Vec<crate::pipelines::Constants> {
        match self {
            Shader::Conv2d => crate::tune::Tile::ALL.iter().map(|t| t.constants().to_vec()).collect(),
            _ => Vec::new(),
        }
    }

    /// The WGSL this family compiles: its file, after the shared text it uses.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Activation => include_str!("../../shaders/activation.wgsl"),
            Shader::Arith => include_str!("../../shaders/arith.wgsl"),
            Shader::Attack => include_str!("../../shaders/attack.wgsl"),
            Shader::BatchNorm => after_shared!("div_exact.wgsl", "../../shaders/batchnorm.wgsl"),
            Shader::ChannelScale => include_str!("../../shaders/channel_scale.wgsl"),
            Shader::Conv2d => after_shared!("div_exact.wgsl", "../../shaders/conv2d.wgsl"),
            Shader::CrossEntropy => after_shared!("workgroup_sum.wgsl", "../../shaders/cross_entropy.wgsl"),
            Shader::DlrLoss => after_shared!("workgroup_sum.wgsl", "../../shaders/dlr_loss.wgsl"),
            Shader::Index => include_str!("../../shaders/index.wgsl"),
            Shader::KlDiv => after_shared!("workgroup_sum.wgsl", "../../shaders/kl_div.wgsl"),
            Shader::MarginLoss => after_shared!("workgroup_sum.wgsl", "../../shaders/margin_loss.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Pool => include_str!("../../shaders/pool.wgsl"),
            Shader::Random => include_str!("../../shaders/random.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Softmax => include_str!("../../shaders/softmax.wgsl"),
        }
    }
}
