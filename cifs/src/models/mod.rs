//! The models (docs/DESIGN.md, section 3): each family its own file with the reference's
//! state-dict names, behind one [`Model`] that the attacks, training and analysis use.
//!
//! - [`family`]: what a family is ([`family::Family`], [`family::Network`]), the
//!   [`ModelKind`] the command line names and the [`ModelConfig`] of one model.
//! - [`FAMILIES`]: the families, one line each (below); [`registry`]: names and state dicts to
//!   models.
//! - [`resnet`]: ResNet-18 (CIFAR variant) and the reference's ResNet-10, plain, with CIFS or
//!   with CAS. [`wide_resnet`]: the pre-activation WideResNet, plain or with CIFS.
//! - [`model`]: [`Model`], a configuration and its network; [`output`]: what a forward gives.
//! - [`probe`]: the CIFS probe and channel mask (and CAS's), shared by the families.
//! - [`layers`]: convolution, batch norm and linear layers with PyTorch's names and
//!   initialisation.

pub mod family;
pub mod layers;
pub mod model;
pub mod output;
pub mod probe;
pub mod registry;

/// Declares each family's module and lists its [`family::Family`] in [`FAMILIES`]: one line per
/// family (`module::FamilyType,`), in the order `--help` lists their architectures.
macro_rules! families {
    ($($module:ident :: $family:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every model family (`models::registry` looks names and state dicts up in them).
        pub const FAMILIES: &[&dyn family::Family] = &[$(&$module::$family),*];
    };
}

families! {
    resnet::ResNets,
    wide_resnet::WideResNets,
}

pub use family::{ModelConfig, ModelKind};
pub use model::Model;
pub use output::{BlockTap, Mode, Output, ProbedBlock, Taps};
