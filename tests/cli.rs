//! End to end through the binary on lavapipe: a width-8 ResNet18-CIFS trains on a tiny image
//! folder (one warm-up and one PGD epoch), a run interrupted after its first epoch and resumed
//! ends with exactly the same weights and metrics, a resume refuses changed settings and records
//! safe ones, the checkpoint evaluates under attacks, a short clean run learns the folder, a
//! RobustBench card carries the whole test split's natural and AutoAttack accuracy as `eval`
//! measures them and is refused for a subset, and
//! bad input (including selections of no images) ends with a one-line error and a non-zero exit,
//! losing nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/files.rs"]
mod files;
use files::{make_folder, read_json, tmpdir};

/// The tuning cache every command of this test shares (commands tune each new shape once).
fn tune_cache() -> PathBuf {
    std::env::temp_dir().join(format!("cifs-wgpu-cli-tune-{}.json", std::process::id()))
}

fn cli(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cifs-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("CIFS_WGPU_TUNE_CACHE", tune_cache())
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

/// The error line of a failed run.
fn fails(args: &[&str]) -> String {
    let out = cli(args);
    assert!(!out.status.success(), "cifs-wgpu {} should fail", args.join(" "));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let line = err.lines().rev().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in {err}")).to_string();
    assert!(!err.contains("panicked"), "{err}");
    line
}

const BASE: [&str; 14] = [
    "--width",
    "8",
    "--batch-size",
    "16",
    "--attack-steps",
    "2",
    "--eval-limit",
    "6",
    "--milestones",
    "1",
    "--seed",
    "3",
    "--clean-epochs",
    "1",
];

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "folder", "--data-dir", data, "--out", out];
    v.extend(BASE);
    v.extend(extra);
    v
}

fn model_tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn train_resume_eval_and_bad_input() {
    let root = tmpdir("run");
    let data = root.join("data");
    make_folder(&data);
    let d = data.to_str().unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    // Uninterrupted: 1 warm-up epoch + 1 adversarial epoch. Without --val-split the test images
    // choose best.safetensors, as in the reference; the log and config.json say so.
    let log = ok_log(&train_args(d, a_s, &["--epochs", "1"]));
    assert!(log.contains("epoch 2 adversarial"), "{log}");
    assert!(
        log.contains("training on 30 images; best.safetensors chosen by PGD-20 accuracy on 6 test images, as the reference does"),
        "{log}"
    );
    let record: serde_json::Value = read_json(a.join("config.json"));
    assert!(record.get("val_split").is_none() && record.get("validation_images").is_none(), "{record}");
    assert!(record["best_chosen_on"].as_str().unwrap().contains("6 test images"), "{record}");
    assert_eq!(best_metadata(&a)["chosen_on"], "test images");
    for f in ["config.json", "metrics.jsonl", "curves.svg", "curves.png", "last.safetensors", "best.safetensors"] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let metrics: Vec<serde_json::Value> =
        std::fs::read_to_string(a.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0]["phase"], "warmup");
    assert_eq!(metrics[1]["phase"], "adversarial");
    for m in &metrics {
        for k in ["train_loss", "train_acc", "natural_acc", "pgd20_acc", "seconds", "images_per_s", "lr"] {
            assert!(m[k].as_f64().is_some_and(f64::is_finite), "{k} in {m}");
        }
        assert!(m.get("val_pgd20_acc").is_none(), "{m}");
    }
    assert!(std::fs::read_to_string(a.join("curves.svg")).unwrap().contains("<polyline"));
    let curves = image::open(a.join("curves.png")).unwrap();
    assert_eq!((curves.width(), curves.height()), (960, 380));

    // Interrupted after the warm-up epoch, then resumed: identical end state.
    ok(&train_args(d, b_s, &["--epochs", "0"]));
    assert!(fails(&train_args(d, b_s, &["--epochs", "1"])).contains("--resume"), "an existing run must not be overwritten");
    ok(&train_args(d, b_s, &["--epochs", "1", "--resume"]));
    // More epochs is a safe change: accepted, and recorded rather than overwritten.
    let config = |dir: &Path| -> serde_json::Value { read_json(dir.join("config.json")) };
    assert_eq!(config(&b)["history"], serde_json::json!([{ "epoch": 1, "changed": { "epochs": { "from": 0, "to": 1 } } }]));
    assert_eq!(model_tensors(&a.join("last.safetensors")), model_tensors(&b.join("last.safetensors")), "resumed run differs");
    let strip = |p: &Path| -> Vec<(String, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].to_string(), v["pgd20_acc"].to_string())
            })
            .collect()
    };
    assert_eq!(strip(&a.join("metrics.jsonl")), strip(&b.join("metrics.jsonl")));
    // Other changes are refused, each named with its old and new value, and nothing is touched.
    let before = (std::fs::read(b.join("config.json")).unwrap(), std::fs::read(b.join("last.safetensors")).unwrap());
    let e = fails(&train_args(d, b_s, &["--epochs", "1", "--resume", "--lr", "0.5", "--seed", "4"]));
    assert!(e.contains("lr 0.1 -> 0.5") && e.contains("seed 3 -> 4") && e.contains("--allow-changes"), "{e}");
    assert_eq!(
        (std::fs::read(b.join("config.json")).unwrap(), std::fs::read(b.join("last.safetensors")).unwrap()),
        before,
        "a refused resume wrote files"
    );
    // Evaluation settings are safe to change; the finished run has nothing left to train.
    ok(&train_args(d, b_s, &["--epochs", "1", "--resume", "--eval-limit", "3", "--eval-every", "2"]));
    let changed =
        serde_json::json!({ "epoch": 2, "changed": { "eval_every": { "from": 1, "to": 2 }, "eval_limit": { "from": 6, "to": 3 } } });
    assert_eq!((&config(&b)["history"][1], &config(&b)["eval_limit"]), (&changed, &3.into()));

    // Evaluation under attacks, as a table and JSON.
    let json = root.join("eval.json");
    let best = a.join("best.safetensors");
    let table = ok(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "folder",
        "--data-dir",
        d,
        "--attacks",
        "natural,fgsm,pgd3,cw2",
        "--batch-size",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(table.contains("natural") && table.contains("cw2") && table.contains("per class"), "{table}");
    let rows: Vec<serde_json::Value> = read_json(&json);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["images"] == 12 && r["accuracy"].as_f64().unwrap() <= 1.0));
    assert_eq!(rows[2]["loss"], "joint (beta 2)", "PGD's loss is reported");
    // AutoAttack-grade attacks on a class-balanced subset: 3 images of a class-sorted folder are
    // one of each class; the AutoAttack row is at most each of its stages'.
    let table = ok(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "folder",
        "--data-dir",
        d,
        "--attacks",
        "natural,apgd-ce,autoattack",
        "--limit",
        "3",
        "--iterations",
        "2",
        "--queries",
        "3",
        "--attack-loss",
        "ce",
        "--json",
        json.to_str().unwrap(),
    ]);
    let rows: Vec<serde_json::Value> = read_json(&json);
    let stages = ["autoattack/apgd-ce", "autoattack/apgd-t", "autoattack/fab-t", "autoattack/square"];
    let names: Vec<&str> = rows.iter().map(|r| r["attack"].as_str().unwrap()).collect();
    assert_eq!(names, [&["natural", "apgd-ce"][..], &stages, &["autoattack"]].concat(), "AutoAttack's stages, in order");
    assert!(stages.iter().all(|st| table.contains(st)), "{table}");
    assert!(rows[0]["per_class"].as_array().unwrap().iter().all(|c| c["images"] == 1), "{}", rows[0]);
    assert_eq!(rows[1]["loss"], "ce");
    assert!(rows[3]["loss"].as_str().unwrap().starts_with("skipped"), "APGD-T needs 4 classes: {}", rows[3]);
    // Each stage attacks what the ones before left: the robust count never rises, and the chain
    // ends at its last stage's.
    let correct = |r: &serde_json::Value| r["correct"].as_u64().unwrap();
    assert!(rows[2..6].windows(2).all(|w| correct(&w[1]) <= correct(&w[0])), "{rows:?}");
    assert_eq!(correct(&rows[6]), correct(&rows[5]));

    // TRADES instead of PGD-AT, in f16: one adversarial epoch, both recorded in config.json
    // (the default run above in f32: `auto` on an adapter without tensor cores).
    let t = root.join("trades");
    ok(&train_args(
        d,
        t.to_str().unwrap(),
        &["--epochs", "1", "--clean-epochs", "0", "--method", "trades", "--trades-beta", "3", "--precision", "f16"],
    ));
    let config: serde_json::Value = read_json(t.join("config.json"));
    assert_eq!((config["method"].as_str(), config["trades_beta"].as_f64()), (Some("trades"), Some(3.0)));
    assert_eq!(config["precision"], "f16");
    let config: serde_json::Value = read_json(a.join("config.json"));
    assert_eq!(config["precision"], "f32");

    // A checkpoint of another width cannot seed this run.
    let c = root.join("c");
    let e = fails(&train_args(d, c.to_str().unwrap(), &["--epochs", "1", "--width", "4", "--init-from", best.to_str().unwrap()]));
    assert!(e.contains("width 8") && e.contains("width 4"), "{e}");
    // Corrupt checkpoint.
    let junk = root.join("junk.safetensors");
    std::fs::write(&junk, b"garbage").unwrap();
    assert!(fails(&["eval", "--checkpoint", junk.to_str().unwrap(), "folder", "--data-dir", d]).contains("junk.safetensors"));
    // A batch larger than the adapter can bind.
    let e = fails(&train_args(d, c.to_str().unwrap(), &["--epochs", "1", "--batch-size", "100000000"]));
    assert!(e.contains("--batch-size"), "{e}");
    // Missing dataset, bad fraction, bad adapter.
    assert!(fails(&["train", "cifar10", "--data-dir", root.join("none").to_str().unwrap(), "--no-download"]).contains("--no-download"));
    let e = fails(&train_args(d, c.to_str().unwrap(), &["--epochs", "1", "--eps", "8/0"]));
    assert!(e.contains("--eps") && e.contains("divides by zero"), "{e}");
    // Negative or non-finite attack and optimiser settings are refused before anything runs.
    for (flag, value) in
        [("--eps", "-1"), ("--step-size", "-2/255"), ("--lr", "-0.1"), ("--beta", "inf"), ("--momentum", "1.5"), ("--attack-steps", "0")]
    {
        let e = fails(&train_args(d, c.to_str().unwrap(), &["--epochs", "1", &format!("{flag}={value}")]));
        assert!(e.contains(flag), "{flag}={value}: {e}");
    }
    assert!(!c.join("config.json").exists(), "a refused run wrote files");
    let e = fails(&["eval", "--checkpoint", best.to_str().unwrap(), "folder", "--data-dir", d, "--eps=-0.5"]);
    assert!(e.contains("--eps"), "{e}");
    let e = fails(&["eval", "--checkpoint", best.to_str().unwrap(), "folder", "--data-dir", d, "--attacks", "natural,fab"]);
    assert!(e.contains("unknown attack `fab`"), "{e}");
    // Selections of no images are refused, not run into tables of zeros.
    for (flag, mut args) in [
        ("--limit", vec!["eval", "--checkpoint", best.to_str().unwrap(), "folder", "--data-dir", d]),
        ("--limit", vec!["analyze", "--checkpoint", best.to_str().unwrap(), "folder", "--data-dir", d]),
        ("--limit-train", train_args(d, c.to_str().unwrap(), &[])),
        ("--limit-test", train_args(d, c.to_str().unwrap(), &[])),
        ("--eval-limit", train_args(d, c.to_str().unwrap(), &[])),
    ] {
        args.extend([flag, "0"]);
        let e = fails(&args);
        assert!(e.contains(flag) && e.contains("selects no images"), "{e}");
    }

    // The channel analysis: one class, its figures and tables; an unknown class lists the classes.
    let an = root.join("analysis");
    let log = ok(&[
        "analyze",
        "--checkpoint",
        best.to_str().unwrap(),
        "folder",
        "--data-dir",
        d,
        "--class",
        "green",
        "--attack",
        "pgd2",
        "--out",
        an.to_str().unwrap(),
    ]);
    assert!(log.contains("green") && log.contains("NR share"), "{log}");
    for f in [
        "green/channels.png",
        "green/channels.svg",
        "green/channels.csv",
        "green/mask-layer4-0.png",
        "green/mask-layer4-1.svg",
        "summary.csv",
        "accuracy.png",
    ] {
        assert!(an.join(f).is_file(), "{f} missing");
    }
    let e = fails(&["analyze", "--checkpoint", best.to_str().unwrap(), "folder", "--data-dir", d, "--class", "purple"]);
    assert!(e.contains("purple") && e.contains("blue, green, red"), "{e}");
    assert!(fails(&["--adapter", "no-such-rt", "info"]).contains("no-such-rt"));
    assert!(fails(&["--precision", "tf32", "info"]).contains("f32, f16 or auto"));

    // Tile tuning: the commands above timed each convolution shape once into the shared cache;
    // `tune` reports the choices for another batch, `info` counts them, `--no-tune` skips it.
    let cache: serde_json::Value = read_json(tune_cache());
    let before = cache["choices"].as_object().unwrap().len();
    assert!(before > 0 && cache["version"] == engine::tune::CACHE_VERSION, "{cache}");
    let table = ok(&["tune", "--width", "8", "--batch-size", "3"]);
    assert!(table.contains("conv2d_bwd_data") && table.contains("(new)") && table.contains("newly timed"), "{table}");
    let info = ok(&["info"]);
    assert!(info.contains("shapes tuned") && info.contains("cooperative matri") && info.contains("precision: auto runs as"), "{info}");
    assert!(fails(&["--no-tune", "tune"]).contains("nothing to do"));
    std::fs::write(tune_cache(), "{ corrupt").unwrap();
    let bench_json = root.join("bench.json");
    let out = cli(&[
        "bench",
        "--width",
        "4",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--model",
        "resnet18",
        "--precision",
        "f16",
        "--json",
        bench_json.to_str().unwrap(),
    ]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ignoring the tuning cache"));
    let doc: serde_json::Value = read_json(&bench_json);
    assert_eq!((doc["precision"].as_str(), doc["precision_requested"].as_str()), (Some("f16"), Some("f16")));

    // Divergence: the loss blows up in epoch 2; the epoch-1 checkpoint survives and still loads.
    let e = fails(&train_args(d, b_s, &["--epochs", "2", "--resume", "--allow-changes", "--lr", "1e38", "--adv", "none"]));
    assert!(e.contains("diverged") && e.contains("epoch 3"), "{e}");
    assert_eq!(
        model_tensors(&a.join("last.safetensors")),
        model_tensors(&b.join("last.safetensors")),
        "the last good checkpoint was touched"
    );
}

/// Training learns: on the colour-separable folder, a short clean run of the default model (30
/// SGD steps: 6 epochs of 5 batches at lr 0.1) then classifies the 12 test images clearly above
/// chance (1 in 3). Measured on lavapipe: 12 of 12; the same run at lr 0, which never moves the
/// weights, answers one class for every image (4 of 12), as do 2 epochs at batch 16 (the run
/// above) and 4 epochs at lr 0.05.
/// What a successful run printed, stdout and stderr (the log lines).
fn ok_log(args: &[&str]) -> String {
    let out = cli(args);
    assert!(out.status.success(), "cifs-wgpu {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The metadata `best.safetensors` carries (epoch, PGD-20 accuracy, which images chose it).
fn best_metadata(run: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(run.join("best.safetensors")).unwrap();
    safetensors::SafeTensors::read_metadata(&bytes).unwrap().1.metadata().clone().unwrap_or_default()
}

/// `--val-split 6` on the folder (30 training images, 10 per class): 6 training images, 2 per
/// class, are held out and never trained on (the run trains on the other 24), evaluated each
/// epoch (natural and PGD-20 in metrics.jsonl), and choose best.safetensors; config.json records
/// the split and the log says what chose the best model. A resumed run keeps the same images; a
/// resume with another --val-split, or none, is refused. (Without the flag:
/// `train_resume_eval_and_bad_input`.)
#[test]
fn val_split_holds_out_training_images_that_choose_the_best_model_and_survives_resume() {
    let root = tmpdir("val");
    let data = root.join("data");
    make_folder(&data);
    let d = data.to_str().unwrap();
    let v = root.join("v");
    let v_s = v.to_str().unwrap();
    // 4 test images against 6 held-out ones: their accuracies can agree only at 0, 50 or 100%,
    // so the metadata's accuracy shows which chose the model.
    let log = ok_log(&train_args(d, v_s, &["--epochs", "0", "--val-split", "6", "--eval-limit", "4"]));
    assert!(log.contains("training on 24 images; best.safetensors chosen by PGD-20 accuracy on 6 held-out training images"), "{log}");
    let config: serde_json::Value = read_json(v.join("config.json"));
    assert_eq!(config["val_split"], 6);
    assert!(config["best_chosen_on"].as_str().unwrap().contains("6 held-out training images"), "{config}");
    let held: Vec<u64> = config["validation_images"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
    let per_class: Vec<usize> = (0..3).map(|c| held.iter().filter(|&&i| i / 10 == c).count()).collect();
    assert_eq!((held.len(), per_class), (6, vec![2, 2, 2]), "{held:?}: class-balanced (the folder is class-sorted)");

    ok(&train_args(d, v_s, &["--epochs", "1", "--val-split", "6", "--eval-limit", "4", "--resume"]));
    let resumed: serde_json::Value = read_json(v.join("config.json"));
    assert_eq!(resumed["validation_images"], config["validation_images"], "a resumed run holds out the same images");
    let metrics: Vec<serde_json::Value> =
        std::fs::read_to_string(v.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        assert!(["val_natural_acc", "val_pgd20_acc"].iter().all(|k| m[k].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a))), "{m}");
        assert_eq!((m["val_images"].as_u64(), m["eval_images"].as_u64()), (Some(6), Some(4)));
    }
    // best.safetensors: the first epoch of the best held-out PGD-20 accuracy.
    let val_pgd = |m: &serde_json::Value| m["val_pgd20_acc"].as_f64().unwrap();
    let best = metrics.iter().fold(&metrics[0], |b, m| if val_pgd(m) > val_pgd(b) { m } else { b });
    let meta = best_metadata(&v);
    assert_eq!(meta["chosen_on"], "held-out training images");
    assert_eq!((meta["epoch"].as_str(), meta["pgd20_acc"].parse::<f64>().unwrap()), (best["epoch"].to_string().as_str(), val_pgd(best)));
    for other in [&["--val-split", "3"][..], &[]] {
        let e = fails(&train_args(d, v_s, &[&["--epochs", "2", "--eval-limit", "4", "--resume"][..], other].concat()));
        assert!(e.contains("val_split 6 -> "), "{e}");
    }
}

#[test]
fn a_short_clean_run_learns_the_separable_folder() {
    let root = tmpdir("learn");
    let data = root.join("data");
    make_folder(&data);
    let (d, out, json) = (data.to_str().unwrap(), root.join("run"), root.join("eval.json"));
    ok(&[
        "train",
        "folder",
        "--data-dir",
        d,
        "--out",
        out.to_str().unwrap(),
        "--width",
        "8",
        "--batch-size",
        "6",
        "--seed",
        "3",
        "--clean-epochs",
        "0",
        "--epochs",
        "6",
        "--adv",
        "none",
        "--milestones",
        "",
        "--eval-every",
        "6",
        "--eval-limit",
        "3",
    ]);
    ok(&[
        "eval",
        "--checkpoint",
        out.join("last.safetensors").to_str().unwrap(),
        "folder",
        "--data-dir",
        d,
        "--attacks",
        "natural",
        "--json",
        json.to_str().unwrap(),
    ]);
    let rows: Vec<serde_json::Value> = read_json(&json);
    let (correct, images) = (rows[0]["correct"].as_u64().unwrap(), rows[0]["images"].as_u64().unwrap());
    assert_eq!(images, 12);
    assert!(correct >= 9, "{correct} of {images} test images right after training (chance: 4)");
}

/// Writes Fashion-MNIST-format files (uncompressed IDX) with `n` images of two brightness
/// classes: class 0 dark, class 1 bright.
fn make_fashion(dir: &Path, prefix: &str, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = engine::Rng::new(n as u64);
    let mut images: Vec<u8> = [0x803u32, n, 28, 28].iter().flat_map(|d| d.to_be_bytes()).collect();
    let mut labels: Vec<u8> = [0x801u32, n].iter().flat_map(|d| d.to_be_bytes()).collect();
    for i in 0..n {
        let label = (i % 2) as u8;
        images.extend((0..784).map(|_| (if label == 1 { 180.0 } else { 40.0 } + rng.uniform(-30.0, 30.0)) as u8));
        labels.push(label);
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

#[test]
fn fashion_mnist_trains_resnet10_cifs_by_default_and_evaluates() {
    let root = tmpdir("fmnist");
    let data = root.join("data");
    make_fashion(&data, "train", 8);
    make_fashion(&data, "t10k", 4);
    let (d, out) = (data.to_str().unwrap(), root.join("run"));
    let args = [
        "train",
        "fashion-mnist",
        "--data-dir",
        d,
        "--no-download",
        "--out",
        out.to_str().unwrap(),
        "--width",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--attack-steps",
        "2",
        "--eval-limit",
        "4",
    ];
    ok(&args);
    let config: serde_json::Value = read_json(out.join("config.json"));
    assert_eq!(config["model"], "resnet10-cifs");
    assert_eq!(
        (config["eps"].as_f64().unwrap() as f32, config["lr"].as_f64().unwrap() as f32, config["augment"].as_bool()),
        (0.1, 0.01, Some(false))
    );
    let best = out.join("best.safetensors");
    let table = ok(&[
        "eval",
        "--checkpoint",
        best.to_str().unwrap(),
        "fashion-mnist",
        "--data-dir",
        d,
        "--no-download",
        "--attacks",
        "natural,pgd2",
        "--eps",
        "0.1",
    ]);
    assert!(table.contains("pgd2") && table.contains("Ankle boot"), "{table}");
    let an = root.join("analysis");
    let log = ok(&[
        "analyze",
        "--checkpoint",
        best.to_str().unwrap(),
        "fashion-mnist",
        "--data-dir",
        d,
        "--no-download",
        "--class",
        "Trouser",
        "--attack",
        "pgd2",
        "--eps",
        "0.1",
        "--out",
        an.to_str().unwrap(),
    ]);
    assert!(log.contains("Trouser") && an.join("Trouser/mask-layer4-0.png").is_file(), "{log}");
    // A model built for other images is refused before anything runs.
    let e = fails(&[
        "train",
        "fashion-mnist",
        "--data-dir",
        d,
        "--no-download",
        "--model",
        "resnet18-cifs",
        "--out",
        root.join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("3x32x32") && e.contains("1x28x28"), "{e}");
    // A test split without images is refused when the data loads.
    let no_test = root.join("no-test");
    make_fashion(&no_test, "train", 2);
    make_fashion(&no_test, "t10k", 0);
    let e =
        fails(&["eval", "--checkpoint", best.to_str().unwrap(), "fashion-mnist", "--data-dir", no_test.to_str().unwrap(), "--no-download"]);
    assert!(e.contains("test images not found") && e.contains("split is empty"), "{e}");
    // Only the WideResNet takes a depth.
    assert!(fails(&["bench", "--model", "resnet18", "--depth", "28"]).contains("--depth 28"));
}

/// `card` on a width-2 model after four clean epochs: the card's accuracies are the whole test
/// split's, as `eval` measures them (read from its JSON, or evaluated by `card` itself), and an
/// evaluation of a subset is refused with nothing written.
#[test]
fn card_from_the_whole_test_split_and_refused_for_a_subset() {
    let root = tmpdir("card");
    let data = root.join("data");
    make_folder(&data);
    let (d, run) = (data.to_str().unwrap(), root.join("run"));
    let r = run.to_str().unwrap();
    let clean = ["--width", "2", "--batch-size", "6", "--clean-epochs", "0", "--epochs", "4", "--adv", "none", "--eval-limit", "3"];
    ok(&[&["train", "folder", "--data-dir", d, "--out", r, "--seed", "3", "--milestones", ""][..], &clean].concat());
    let ckpt = run.join("last.safetensors");
    let c = ckpt.to_str().unwrap();
    let few = ["--iterations", "2", "--queries", "3"];
    let path = |name: &str| root.join(name).to_str().unwrap().to_string();
    let (whole, subset) = (path("eval.json"), path("subset.json"));
    let eval = |json: &str, extra: &[&str]| {
        let args = [
            &["eval", "--checkpoint", c, "folder", "--data-dir", d, "--attacks", "natural,autoattack", "--attack-loss", "ce"][..],
            &few,
            &["--json", json],
            extra,
        ];
        ok(&args.concat());
        let rows: Vec<serde_json::Value> = read_json(json);
        let pct = |attack: &str| {
            let r = rows.iter().find(|r| r["attack"] == attack).unwrap();
            format!("{:.2}", 100.0 * r["correct"].as_f64().unwrap() / r["images"].as_f64().unwrap())
        };
        (pct("natural"), pct("autoattack"))
    };
    let measured = eval(&whole, &[]);
    assert_ne!(measured.0, measured.1, "the attack breaks some images, so the card's two accuracies can be told apart");
    let card = |run: fn(&[&str]) -> String, out: &str, extra: &[&str]| {
        run(&[&["card", "--checkpoint", c, "folder", "--data-dir", d, "--out", out][..], &few, extra].concat())
    };

    let from_json = path("card-json.json");
    card(ok, &from_json, &["--eval-json", &whole, "--name", "Tiny", "--reported-clean", "91.5", "--reported-aa", "50"]);
    let v: serde_json::Value = read_json(&from_json);
    assert_eq!((v["clean_acc"].as_str().unwrap(), v["autoattack_acc"].as_str().unwrap()), (measured.0.as_str(), measured.1.as_str()));
    assert_eq!((&v["reported"], &v["reported_clean_acc"]), (&"50.00".into(), &"91.50".into()));
    assert_eq!((&v["name"], &v["architecture"], &v["dataset"]), (&"Tiny".into(), &"resnet18-cifs (width 2)".into(), &"folder".into()));
    assert_eq!((&v["eps"], &v["threat_model"], &v["number_forward_passes"]), (&"8/255".into(), &"Linf".into(), &1.into()));
    assert_eq!((&v["additional_data"], &v["unreliable"]), (&false.into(), &false.into()));
    let footnote = v["footnote"].as_str().unwrap();
    assert!(footnote.contains("NOT standard") && footnote.contains("2 iterations") && footnote.contains("Square 3"), "{footnote}");

    // Evaluated by `card` itself: the same numbers, and the measured ones reported.
    let evaluated = path("card.json");
    card(ok, &evaluated, &[]);
    let v: serde_json::Value = read_json(&evaluated);
    assert_eq!((v["clean_acc"].as_str().unwrap(), v["autoattack_acc"].as_str().unwrap()), (measured.0.as_str(), measured.1.as_str()));
    assert_eq!(v["reported"], v["autoattack_acc"]);

    // A subset, from eval --limit or card --limit: refused, nothing written.
    eval(&subset, &["--limit", "6"]);
    let refused = path("refused.json");
    let e = card(fails, &refused, &["--eval-json", &subset]);
    assert!(e.contains("6 of the test split's 12 images") && e.contains("whole test set"), "{e}");
    let e = card(fails, &refused, &["--limit", "6"]);
    assert!(e.contains("--limit 6") && e.contains("whole test set"), "{e}");
    assert!(!Path::new(&refused).exists(), "a refused card was written");
}
