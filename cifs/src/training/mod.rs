//! Training (docs/DESIGN.md, sections 4 and 5).
//!
//! - The settings: [`config`] (`TrainConfig`, made from a [`recipe`]), [`resume`] (what a resumed
//!   run may change, and the record of changes).
//! - The methods: [`objective`] (what a method does in a step), [`pgd_at`], [`trades`],
//!   [`single_step`] (FGSM-RS, N-FGSM), and [`methods`], which maps the configured method to its
//!   objective; [`ema`]: the weight average; [`overfitting`]: the catastrophic-overfitting rule.
//! - The run: [`trainer`] (start or resume, then per epoch: the pass of [`epoch`], one [`step`]
//!   per batch with [`optim`]'s SGD, the evaluation, the checkpoint), its [`events`] and [`files`];
//!   [`validation`]: the held-out training images that choose the best model.
//! - [`bench`]: timed steps for `bench` and `tune`.

pub mod batch;
pub mod bench;
pub mod config;
pub mod ema;
pub mod epoch;
pub mod events;
pub mod files;
pub mod methods;
pub mod objective;
pub mod optim;
pub mod overfitting;
pub mod pgd_at;
pub mod recipe;
pub mod resume;
pub mod single_step;
pub mod step;
pub mod trades;
pub mod trainer;
pub mod validation;
