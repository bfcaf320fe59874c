//! Attacks on a model in evaluation mode (docs/DESIGN.md, section 4), and the evaluation that
//! runs a list of them over a test set.
//!
//! - [`attack`]: what an evaluation attack is ([`attack::Attack`]), the images it works on, the
//!   settings every attack receives; [`ATTACKS`]: the attacks by name, one line each (below);
//!   [`registry`]: a name to its attack.
//! - The attacks: [`natural`]; [`pgd`] (PGD, FGSM, CW-inf); [`apgd`] (APGD-CE, -DLR, -T as
//!   AutoAttack runs them); [`fab`] (FAB-T); [`square`]; [`autoattack`] (the chain of them).
//! - [`single_step`]: the one-step attacks fast adversarial training makes its images with.
//! - [`loss`]: the loss an attack ascends; [`hostloss`]: per-image losses on the host.
//! - [`evaluate`]: accuracy under a list of attacks, per class, chains stage by stage.

pub mod attack;
pub mod evaluate;
pub mod hostloss;
pub mod loss;
pub mod registry;
pub mod single_step;

/// Declares each attack's module and lists its names in [`ATTACKS`]: one line per module
/// (`module: "name" => parse_function, ...;`, `<steps>` where a name carries a count).
macro_rules! attacks {
    ($($module:ident : $($name:literal => $parse:ident),+ ;)*) => {
        $(pub mod $module;)*
        /// Every evaluation attack, in the order `--help` and errors list them.
        pub const ATTACKS: &[attack::Entry] = &[$($(attack::Entry { name: $name, parse: $module::$parse }),+),*];
    };
}

attacks! {
    natural: "natural" => parse;
    pgd: "fgsm" => parse_fgsm, "pgd<steps>" => parse_pgd, "cw<steps>" => parse_cw;
    apgd: "apgd-ce" => parse, "apgd-dlr" => parse, "apgd-t" => parse;
    fab: "fab-t" => parse;
    square: "square" => parse;
    autoattack: "autoattack" => parse;
}
