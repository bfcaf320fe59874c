//! The `cifs-wgpu` command line: it parses arguments, calls the `cifs` library and prints. One
//! module per subcommand in `commands/`, the argument groups and value parsers they share in
//! `args.rs`, the terminal display and the HTTP downloader beside them.

mod args;
mod commands;
mod display;
mod distributed;
mod http;
mod open;

use std::process::ExitCode;

use cifs::distributed::Collective;
use clap::{Parser, Subcommand};
use engine::{RuntimeOptions, TuneCache, Tuning};

use commands::{analyze, bench, card, eval, info, train, tune};

#[derive(Parser)]
#[command(name = "cifs-wgpu", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CIFS_WGPU_COMMIT"), ")"), args_override_self = true)]
#[command(about = "Adversarial training of CNNs with CIFS on any GPU wgpu reaches")]
struct Cli {
    /// GPU adapter: an index from `info`, a type (discrete, integrated, cpu) or part of its name.
    /// Overrides the CIFS_WGPU_ADAPTER environment variable.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Use the built-in tile rule for the convolution kernels instead of timing the candidates
    /// at each new shape (and remembering the fastest in the tuning cache; see `tune`).
    #[arg(long, global = true)]
    no_tune: bool,
    /// Precision of the convolutions and dense layers: f32; f16 (each operand scaled by a power
    /// of two chosen on the GPU and rounded to f16, f32 accumulation); auto: f16 on tensor cores
    /// where the adapter has them and this build has kernels for them, otherwise f32.
    #[arg(long, global = true, default_value = "auto")]
    precision: engine::Precision,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter, the one that would be used, and its key limits.
    Info,
    /// Train a model (default: the reference recipe, ResNet18-CIFS with PGD-10 AT after a clean warm-up).
    Train(train::TrainArgs),
    /// Evaluate a checkpoint under attacks.
    Eval(eval::EvalArgs),
    /// The paper's channel analysis of a checkpoint: per class, layer4's channel activations
    /// (and, for CIFS models, each mask) on natural and adversarial images, sorted by relevance;
    /// negatively-relevant activation shares; accuracy per class. SVG, PNG and CSV.
    Analyze(analyze::AnalyzeArgs),
    /// A RobustBench model card (JSON) of a checkpoint: standard AutoAttack and natural accuracy
    /// on the whole test split, run here or read from `eval --json`. Refused for a subset.
    Card(card::CardArgs),
    /// Per-step wall-clock and GPU time, dispatches and submits of the PGD-10 AT step, the clean
    /// training step and the eval forward.
    Bench(bench::BenchArgs),
    /// Time every tile configuration of the convolution kernels at each shape of a model's
    /// training and evaluation steps on this GPU, keep the fastest in the tuning cache
    /// ($XDG_CACHE_HOME/cifs-wgpu/tune-<adapter>.json, or $CIFS_WGPU_TUNE_CACHE), and print the
    /// choices. `train`, `eval` and `bench` otherwise tune each shape at its first use.
    Tune(tune::TuneArgs),
}

impl Cli {
    /// The runtime the flags ask for, over the environment's defaults (`RuntimeOptions::from_env`;
    /// a variable set to a value it does not know is an error).
    fn runtime_options(&self) -> Result<RuntimeOptions, String> {
        let mut options = RuntimeOptions::from_env().map_err(|e| e.to_string())?;
        if let Some(a) = &self.adapter {
            options.adapter = Some(a.clone());
        }
        options.tuning = if self.no_tune { Tuning::Heuristic } else { Tuning::Tune { cache: TuneCache::from_env() } };
        options.kernels.precision = self.precision;
        Ok(options)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let coll = match distributed::join() {
        Ok(c) => c,
        Err(e) => {
            cifs::say!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = cli.runtime_options().and_then(|options| run(&options, cli.command, &*coll));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if coll.size() > 1 => coll.abort(&e),
        Err(e) => {
            cifs::say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` on a runtime opened with `options`, as rank `coll.rank()` of `coll.size()`.
fn run(options: &RuntimeOptions, command: Command, coll: &dyn Collective) -> Result<(), String> {
    match command {
        Command::Train(a) => train::run(options, a, coll),
        Command::Eval(a) => eval::run(options, a, coll),
        _ if coll.size() > 1 => {
            Err(format!("only train and eval run on several ranks (this launch has {}); run the others as one process", coll.size()))
        }
        Command::Info => info::run(options),
        Command::Analyze(a) => analyze::run(options, a),
        Command::Bench(a) => bench::run(options, a),
        Command::Card(a) => card::run(options, a, coll),
        Command::Tune(a) if options.tuning == Tuning::Heuristic => {
            Err(format!("`tune --no-tune` has nothing to do (model {})", a.m.kind()))
        }
        Command::Tune(a) => tune::run(options, a),
    }
}
