//! The registry of WGSL kernel families. Every shader enters the engine here, through
//! `include_str!`, so tests, benches and the runtime compile exactly the same text.
//!
//! WGSL has no include: text shared by several families lives in its own file and is prepended
//! here. Every family gets `grid.wgsl` (workgroup sizes and the 1-D invocation index); the loss
//! families also get `workgroup_sum.wgsl`, the convolution and batch norm `div_exact.wgsl`, and
//! batch norm its workgroup sum (`reduce2_tree.wgsl`, or `reduce2_subgroups.wgsl` in the family
//! compiled for adapters with subgroup operations). The tensor-core convolutions are the SIMT
//! convolution's text with their own entry points added (`conv2d_coop.wgsl`), after a first
//! text that holds the module's `enable` directives and its matrix size (`coop8.wgsl`,
//! `coop16.wgsl`).

/// Declares the families: for each, its enum variant, the text that must come first if any
/// (`first "file" =>`: enable directives), its file and the shared files it uses besides
/// `grid.wgsl`. A new family is one line here.
macro_rules! families {
    ($($variant:ident => $(first $head:literal =>)? $file:literal $(+ $shared:literal)*,)*) => {
        /// One WGSL file = one kernel family (see each file's header for its entry points and
        /// bindings).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Shader {
            $($variant,)*
        }

        impl Shader {
            #[cfg(test)]
            pub const ALL: &[Shader] = &[$(Shader::$variant,)*];

            pub fn file_name(self) -> &'static str {
                match self {
                    $(Shader::$variant => $file,)*
                }
            }

            /// The WGSL this family compiles: the shared text it uses, then its own file.
            pub fn source(self) -> &'static str {
                match self {
                    $(Shader::$variant => concat!(
                        $(include_str!(concat!("../../shaders/", $head)),)?
                        include_str!("../../shaders/grid.wgsl"),
                        $(include_str!(concat!("../../shaders/", $shared)),)*
                        include_str!(concat!("../../shaders/", $file))
                    ),)*
                }
            }
        }
    };
}

families! {
    Activation => "activation.wgsl",
    Arith => "arith.wgsl",
    Attack => "attack.wgsl",
    BatchNorm => "batchnorm.wgsl" + "div_exact.wgsl" + "reduce2_tree.wgsl",
    // The same batch norm with its workgroup sums on subgroup operations (adapters with SUBGROUP).
    BatchNormSubgroups => "batchnorm.wgsl" + "div_exact.wgsl" + "reduce2_subgroups.wgsl",
    ChannelScale => "channel_scale.wgsl",
    Conv2d => "conv2d.wgsl" + "div_exact.wgsl",
    // The convolution GEMMs on 8x8x8 and on 16x16x16 cooperative matrices (tensor cores).
    Conv2dCoop8 => first "coop8.wgsl" => "conv2d_coop.wgsl" + "conv2d.wgsl" + "div_exact.wgsl",
    Conv2dCoop16 => first "coop16.wgsl" => "conv2d_coop.wgsl" + "conv2d.wgsl" + "div_exact.wgsl",
    CrossEntropy => "cross_entropy.wgsl" + "workgroup_sum.wgsl",
    DlrLoss => "dlr_loss.wgsl" + "workgroup_sum.wgsl",
    Fab => "fab.wgsl",
    Index => "index.wgsl",
    KlDiv => "kl_div.wgsl" + "workgroup_sum.wgsl",
    MarginLoss => "margin_loss.wgsl" + "workgroup_sum.wgsl",
    OperandScale => "operand_scale.wgsl",
    Optim => "optim.wgsl",
    Pool => "pool.wgsl",
    Random => "random.wgsl",
    Reduce => "reduce.wgsl",
    Softmax => "softmax.wgsl",
}

/// The shared texts (none is a family of its own).
#[cfg(test)]
pub(crate) const SHARED_SOURCES: [&str; 8] = [
    "grid.wgsl",
    "workgroup_sum.wgsl",
    "div_exact.wgsl",
    "reduce2_tree.wgsl",
    "reduce2_subgroups.wgsl",
    "conv2d.wgsl",
    "coop8.wgsl",
    "coop16.wgsl",
];

impl Shader {
    /// The specialisations the engine compiles this family with, besides the source as written
    /// (the pipeline cache refuses any other, and a test validates each).
    pub fn specialisations(self) -> Vec<crate::pipelines::Constants> {
        match self {
            Shader::Conv2d => crate::tune::Tile::ALL
                .iter()
                .flat_map(|t| [t.constants().to_vec(), crate::ops::conv2d::f16_constants(*t).to_vec()])
                .collect(),
            Shader::Conv2dCoop8 => coop_specialisations(8),
            Shader::Conv2dCoop16 => coop_specialisations(16),
            _ => Vec::new(),
        }
    }
}

/// Every tensor-core tile of matrix side `size` at every subgroup size it exists for.
fn coop_specialisations(size: u32) -> Vec<crate::pipelines::Constants> {
    let tiles = crate::tune::CoopTile::all(size);
    let subgroups = crate::precision::SUBGROUP_SIZES;
    tiles.iter().flat_map(|t| subgroups.iter().filter(|&&sg| t.valid(sg)).map(|&sg| t.constants(sg).to_vec())).collect()
}
