//! What the command line draws: progress bars and the summary lines of a run.

use cifs::training::config::Phase;
use cifs::training::events::{EpochMetrics, Events};
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` units with `template` (indicatif syntax).
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Warmup => "warm-up",
        Phase::Adversarial => "adversarial",
        Phase::Clean => "clean",
    }
}

/// Training progress: one bar per epoch, a summary line after it.
#[derive(Default)]
pub struct TrainDisplay {
    bar: Option<ProgressBar>,
}

impl Events for TrainDisplay {
    fn epoch_start(&mut self, epoch: usize, total: usize, phase: Phase, lr: f32, batches: usize) {
        let b = bar(batches as u64, "{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}");
        b.set_prefix(format!("epoch {epoch}/{total} {} lr {lr:.4}", phase_name(phase)));
        self.bar = Some(b);
    }

    fn batch(&mut self, done: usize, loss: f64, acc: f64, images_per_s: f64) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("loss {loss:.4} acc {:.1}% {images_per_s:.0} img/s", 100.0 * acc));
        }
    }

    fn evaluating(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("evaluating {done}/{total}"));
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let eval = match (m.natural_acc, m.pgd20_acc) {
            (Some(n), Some(p)) => format!(" | test natural {:.2}% PGD-20 {:.2}% ({} images)", 100.0 * n, 100.0 * p, m.eval_images),
            _ => String::new(),
        };
        let val = match (m.val_natural_acc, m.val_pgd20_acc) {
            (Some(n), Some(p)) => format!(" | held-out natural {:.2}% PGD-20 {:.2}% ({} images)", 100.0 * n, 100.0 * p, m.val_images),
            _ => String::new(),
        };
        let eval = eval + &val;
        let ema = match (m.ema_natural_acc, m.ema_pgd20_acc) {
            (Some(n), Some(p)) => format!(" | EMA natural {:.2}% PGD-20 {:.2}%", 100.0 * n, 100.0 * p),
            _ => String::new(),
        };
        let collapsed = if m.collapsed { " | COLLAPSED: PGD-20 under half its best (catastrophic overfitting)" } else { "" };
        println!(
            "epoch {} {} lr {:.4}: loss {:.4} acc {:.2}%{eval}{ema}{collapsed} | {:.1} s, {:.0} img/s",
            m.epoch,
            phase_name(m.phase),
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.seconds,
            m.images_per_s
        );
    }
}
