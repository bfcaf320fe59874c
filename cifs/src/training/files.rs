//! A run's output directory: `config.json` (the run's record), `metrics.jsonl` (one line per
//! epoch), `curves.svg|png`, `last.safetensors` (model, momentum and where the run stands:
//! resumable), `best.safetensors` (the model of the best PGD-20 accuracy) and, with `--ema`,
//! `ema.safetensors` (the weight average as a model, with its update count). Every file is
//! written whole or not at all (a temporary file, then a rename).

use std::path::{Path, PathBuf};

use crate::analysis::plots;
use crate::checkpoint::state::write_atomic;
use crate::error::{io, CifsError, Result};
use crate::training::config::{Phase, TrainConfig};
use crate::training::events::EpochMetrics;

pub struct RunFiles {
    pub out: PathBuf,
}

impl RunFiles {
    /// The files in `out`, which is made if missing.
    pub fn create(out: &Path) -> Result<RunFiles> {
        std::fs::create_dir_all(out).map_err(io(out))?;
        Ok(RunFiles { out: out.to_path_buf() })
    }

    pub fn last(&self) -> PathBuf {
        self.out.join("last.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.out.join("best.safetensors")
    }
    pub fn ema(&self) -> PathBuf {
        self.out.join("ema.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }
    pub fn config(&self) -> PathBuf {
        self.out.join("config.json")
    }
    /// `curves.svg` and `curves.png`.
    pub fn curves(&self) -> PathBuf {
        self.out.join("curves")
    }

    /// The metrics of the epochs up to `upto_epoch` (1-based) in `metrics.jsonl`; none if the
    /// file is missing.
    pub fn read_metrics(&self, upto_epoch: usize) -> Result<Vec<EpochMetrics>> {
        let path = self.metrics();
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let mut v = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let m: EpochMetrics =
                serde_json::from_str(line).map_err(|e| CifsError::Invalid(format!("{}: not a metrics line ({e})", path.display())))?;
            if m.epoch <= upto_epoch {
                v.push(m);
            }
        }
        Ok(v)
    }

    pub fn write_metrics(&self, all: &[EpochMetrics]) -> Result<()> {
        let text: String = all.iter().map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n").collect();
        write_atomic(&self.metrics(), text.as_bytes()).map_err(io(&self.metrics()))
    }

    pub fn write_config(&self, json: &str) -> Result<()> {
        write_atomic(&self.config(), json.as_bytes()).map_err(io(&self.config()))
    }

    /// The loss and accuracy curves of `history`, titled by the run's model and dataset.
    pub fn plot_curves(&self, cfg: &TrainConfig, history: &[EpochMetrics]) -> Result<()> {
        let points: Vec<plots::CurvePoint> = history
            .iter()
            .map(|h| plots::CurvePoint {
                epoch: h.epoch,
                loss: h.train_loss,
                natural: h.natural_acc,
                robust: h.pgd20_acc,
                adversarial: h.phase == Phase::Adversarial,
            })
            .collect();
        let title = format!("{} width {} on {}", cfg.model, cfg.width, cfg.dataset);
        plots::save(&plots::Curves { title, points: &points }, &self.curves()).map(drop)
    }

    /// What a run that diverged keeps: the last good checkpoint, if one was written.
    pub fn kept_on_divergence(&self) -> String {
        if self.last().is_file() {
            format!("the last good checkpoint ({}) is kept", self.last().display())
        } else {
            "no checkpoint was written yet".into()
        }
    }
}
