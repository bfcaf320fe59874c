//! Fast adversarial training through the binary on lavapipe, on the colour-separable image
//! folder:
//!
//! - `--method fgsm-rs` and `--method n-fgsm` each learn: a plain width-8 ResNet-18, 3 epochs of
//!   5 single-step batches at lr 0.1 (no warm-up), ends with a training accuracy (on its own
//!   adversarial images, train mode) of at least 70%, where chance is 1 in 3 (measured on lavapipe:
//!   fgsm-rs 40%, 73%, 87%; n-fgsm 57%, 93%, 90%; at lr 0 fgsm-rs stays at 27%, 30%, 33%);
//!   `config.json` records the method, and
//!   `metrics.jsonl` the collapse flag of every epoch, unset.
//!
//! Not checked: test accuracy after these runs. In eval mode, on 12 test images, every tiny run
//! tried (ResNet18-CIFS and ResNet-18, fgsm-rs, n-fgsm, PGD-AT at eps 2/255, lr 0.02 to 0.1, up to
//! 10 epochs) answered one class as often as not, as the clean run does at most settings (tests/cli.rs).

use std::path::Path;
use std::process::{Command, Output};

#[path = "common/files.rs"]
mod files;
use files::{make_folder, read_json, tmpdir};

fn cli(args: &[&str]) -> Output {
    let tune = std::env::temp_dir().join(format!("cifs-wgpu-fast-at-tune-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cifs-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("CIFS_WGPU_TUNE_CACHE", tune)
        .output()
        .unwrap();
    eprintln!("$ cifs-wgpu {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(out.status.success(), "cifs-wgpu {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `train` on the folder at `data` into `out`: width 8, batches of 6 (5 per epoch), seed 3, no
/// warm-up, lr 0.1 throughout, evaluated on 3 images a class; then `extra`.
fn train(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "folder", "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--width", "8", "--batch-size", "6", "--seed", "3", "--clean-epochs", "0", "--milestones", "", "--eval-limit", "3"]);
    args.extend(extra);
    ok(&args)
}

#[test]
fn each_single_step_method_learns_the_separable_folder() {
    let root = tmpdir("fast-at-learn");
    let data = root.join("data");
    make_folder(&data);
    for method in ["fgsm-rs", "n-fgsm"] {
        let out = root.join(method);
        let log = train(&data, &out, &["--model", "resnet18", "--method", method, "--epochs", "3", "--eval-every", "3"]);
        assert!(log.contains("epoch 3 adversarial"), "{log}");
        let config: serde_json::Value = read_json(out.join("config.json"));
        assert_eq!(config["method"], method);
        let metrics: Vec<serde_json::Value> =
            std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let acc: Vec<f64> = metrics.iter().map(|m| m["train_acc"].as_f64().unwrap()).collect();
        eprintln!("{method}: training accuracy per epoch {acc:?}");
        assert!(acc[2] >= 0.7, "{method}: training accuracy {acc:?} (chance 1/3)");
        // One evaluation: nothing before it to collapse from, so the flag is there and quiet.
        assert!(metrics.iter().all(|m| m["collapsed"] == false), "{method}: {metrics:?}");
    }
}

/// The collapse flag fires on a run made to collapse and not before: a clean run (the
/// default model, which the separable folder makes robust at eps 8/255) evaluated on all 12
/// test images each epoch, then resumed for one epoch at lr 5, which wrecks the weights. Its
/// PGD-20 accuracy falls to where the model answers one class (4 of 12 at most), under half its
/// best and at least 10 points under it: `collapsed` in metrics.jsonl and `COLLAPSED` in the
/// log line; the healthy epochs carry neither.
#[test]
fn the_collapse_flag_fires_on_a_run_made_to_collapse() {
    let root = tmpdir("fast-at-collapse");
    let data = root.join("data");
    make_folder(&data);
    let out = root.join("run");
    let healthy = ["--adv", "none", "--epochs", "6", "--eval-every", "1", "--eval-limit", "12"];
    let log = train(&data, &out, &healthy);
    assert!(!log.contains("COLLAPSED"), "{log}");
    let metrics = |out: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let before = metrics(&out);
    let best = before.iter().map(|m| m["pgd20_acc"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best >= 0.75, "the healthy run must be robust for a collapse to show: best PGD-20 {best}");
    assert!(before.iter().all(|m| m["collapsed"] == false), "{before:?}");
    let wrecked = ["--adv", "none", "--epochs", "7", "--eval-every", "1", "--eval-limit", "12", "--lr", "5"];
    let log = train(&data, &out, &[&wrecked[..], &["--resume", "--allow-changes"]].concat());
    let after = metrics(&out);
    let last = after.last().unwrap();
    eprintln!("best PGD-20 {best}, after lr 5: {last}");
    assert_eq!(last["epoch"], 7);
    assert!(last["pgd20_acc"].as_f64().unwrap() < 0.5 * best - 1e-9, "the wrecked epoch did not collapse: {last}");
    assert_eq!(last["collapsed"], true, "{last}");
    assert!(log.contains("COLLAPSED"), "{log}");
}
