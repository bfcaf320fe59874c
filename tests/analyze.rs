//! `cifs-wgpu analyze`: its numbers against a float64 recomputation from the model's
//! outputs image by image (batching, grouping by class, means, the relevance scaling and order,
//! the NR shares), and its files: every PNG decodes at its size, every SVG parses as XML, every
//! channel CSV has one row per channel.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use cifs::analysis::{analyze, nr_share, write};
use cifs::attacks::attack::EvalSettings;
use cifs::attacks::pgd::{AttackLoss, Pgd, Start};
use cifs::attacks::registry::parse;
use cifs::{Mode, Model};
use common::*;
use engine::{Runtime, Tensor};

/// The small trained ResNet18-CIFS of the attack fixtures, and 7 images of classes 0, 2 and 5.
fn setup(rt: &Runtime) -> (Model, Arc<datasets::Dataset>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attacks/success.safetensors");
    let model = cifs::checkpoint::load_model(rt, &path).unwrap();
    let mut r = rng(41);
    let labels = vec![0u8, 2, 5, 0, 5, 2, 0];
    let images = (0..labels.len() * 3072).map(|i| ((i / 1024) as f64 * 20.0 + r.uniform(0.0, 120.0)) as u8).collect();
    (
        model,
        Arc::new(datasets::Dataset {
            images,
            labels,
            classes: (0..10).map(|c| format!("c{c}")).collect(),
            shape: datasets::ImageShape::RGB32,
        }),
    )
}

/// Per-channel sums of one image's features, masks and unmasked outputs, natural and adversarial.
fn taps_of(rt: &Runtime, model: &Model, x: &Tensor) -> Vec<Vec<f32>> {
    let (_, taps) = engine::no_grad(|| model.forward_with_taps(rt, x, None, Mode::Eval)).unwrap();
    let mut v = vec![taps.features.to_vec(rt).unwrap()];
    for b in &taps.blocks {
        v.push(b.mask.to_vec(rt).unwrap());
        v.push(b.pooled.to_vec(rt).unwrap());
    }
    v
}

#[test]
fn analysis_numbers_match_an_image_by_image_float64_recomputation() {
    let rt = rt();
    let (model, data) = setup(&rt);
    let settings = EvalSettings { batch_size: 3, ..EvalSettings::reference(8.0 / 255.0, 3) };
    let analysis = analyze(&rt, &model, &data, &[0, 5], parse("pgd2").unwrap().as_ref(), settings, |_, _| {}).unwrap();
    assert_eq!(analysis.classes.iter().map(|c| c.class.as_str()).collect::<Vec<_>>(), vec!["c0", "c5"]);

    let weights = model.classifier().weight.leaf().to_vec(&rt).unwrap();
    let channels = weights.len() / 10;
    for (k, &class) in [0usize, 5].iter().enumerate() {
        let stats = &analysis.classes[k];
        // Sums of every tapped vector over this class's images, natural then adversarial, in f64.
        let mut sums: Vec<Vec<f64>> = Vec::new();
        let mut count = 0;
        for i in (0..data.len()).filter(|&i| data.labels[i] as usize == class) {
            count += 1;
            let img: Vec<f32> = data.image(i).iter().map(|&b| b as f32 / 255.0).collect();
            let x = Tensor::from_f32(&rt, &[1, 3, 32, 32], &img).unwrap();
            let y = Tensor::from_u32(&rt, &[1], &[class as u32]).unwrap();
            let adv = Pgd { eps: 8.0 / 255.0, step: 0.8 / 255.0, steps: 2, loss: AttackLoss::Joint { beta: 2.0 } }
                .attack(&rt, &model, &x, &y, Start::Zero)
                .unwrap();
            let both: Vec<Vec<f32>> = taps_of(&rt, &model, &x).into_iter().chain(taps_of(&rt, &model, &adv)).collect();
            if sums.is_empty() {
                sums = both.iter().map(|v| vec![0.0; v.len()]).collect();
            }
            for (s, v) in sums.iter_mut().zip(&both) {
                for (a, b) in s.iter_mut().zip(v) {
                    *a += *b as f64;
                }
            }
        }
        assert_eq!(stats.images, count);
        let mean = |v: &[f64]| v.iter().map(|x| x / count as f64).collect::<Vec<f64>>();
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let half = sums.len() / 2;
        assert_close("natural features", &f32s(&stats.natural), &mean(&sums[0]), tol::FWD);
        assert_close("adversarial features", &f32s(&stats.adversarial), &mean(&sums[half]), tol::FWD);
        assert_eq!(stats.blocks.len(), 2);
        for (b, block) in stats.blocks.iter().enumerate() {
            assert_close("natural mask", &f32s(&block.natural_mask), &mean(&sums[1 + 2 * b]), tol::FWD);
            assert_close("natural unmasked", &f32s(&block.natural_unmasked), &mean(&sums[2 + 2 * b]), tol::FWD);
            assert_close("adversarial mask", &f32s(&block.adversarial_mask), &mean(&sums[half + 1 + 2 * b]), tol::FWD);
            assert_close("adversarial unmasked", &f32s(&block.adversarial_unmasked), &mean(&sums[half + 2 + 2 * b]), tol::FWD);
        }
        // Relevance: the class's weight row over its largest magnitude; channels sorted by it.
        let row: Vec<f64> = weights[class * channels..(class + 1) * channels].iter().map(|&w| w as f64).collect();
        let scale = row.iter().fold(0f64, |m, w| m.max(w.abs()));
        assert_close("relevance", &f32s(&stats.relevance), &row.iter().map(|w| w / scale).collect::<Vec<_>>(), tol::FWD);
        assert!(stats.relevance.iter().any(|&r| approx::abs_diff_eq!(r.abs(), 1.0, epsilon = 1e-12)));
        let order = stats.order();
        assert!(order.windows(2).all(|w| stats.relevance[w[0]] >= stats.relevance[w[1]]));
        // NR share: activation mass on channels of negative relevance over all of it.
        let want = |v: &[f64]| v.iter().zip(&row).filter(|(_, r)| **r < 0.0).map(|(a, _)| a).sum::<f64>() / v.iter().sum::<f64>();
        let ((nat, adv), without) = stats.nr_shares();
        assert_close("NR share", &[nat as f32, adv as f32], &[want(&mean(&sums[0])), want(&mean(&sums[half]))], tol::FWD);
        let (un, ua) = without.expect("a CIFS model");
        assert_close("NR share unmasked", &[un as f32, ua as f32], &[want(&mean(&sums[4])), want(&mean(&sums[half + 4]))], tol::FWD);
    }
    assert_eq!(nr_share(&[1.0, 3.0], &[0.5, -0.2]), 0.75);
}

#[test]
fn analysis_files_are_valid_figures_and_tables() {
    let rt = rt();
    let (model, data) = setup(&rt);
    let settings = EvalSettings { batch_size: 4, ..EvalSettings::reference(8.0 / 255.0, 4) };
    let analysis = analyze(&rt, &model, &data, &[2], parse("fgsm").unwrap().as_ref(), settings, |_, _| {}).unwrap();
    let out = std::env::temp_dir().join(format!("cifs-wgpu-analyze-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let files = write(&analysis, &out, "test model").unwrap();
    let channels = model.classifier().weight.leaf().shape()[1];
    let names: Vec<String> = files.iter().map(|f| f.strip_prefix(&out).unwrap().display().to_string()).collect();
    for want in [
        "c2/channels.svg",
        "c2/channels.png",
        "c2/channels.csv",
        "c2/mask-layer4-0.png",
        "c2/mask-layer4-1.csv",
        "summary.csv",
        "accuracy.svg",
        "accuracy.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not among {names:?}");
    }
    for f in &files {
        match f.extension().and_then(|e| e.to_str()) {
            Some("png") => {
                let img = image::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                let want = if f.ends_with("accuracy.png") { (480, 420) } else { (900, 560) };
                assert_eq!((img.width(), img.height()), want, "{}", f.display());
            }
            Some("svg") => {
                let text = std::fs::read_to_string(f).unwrap();
                let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert_eq!(doc.root_element().tag_name().name(), "svg");
            }
            Some("csv") if !f.ends_with("summary.csv") => {
                let text = std::fs::read_to_string(f).unwrap();
                assert_eq!(text.lines().count(), channels + 1, "{}: one row per channel and a header", f.display());
            }
            _ => {}
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 2);
    assert!(summary.lines().nth(1).unwrap().starts_with("c2,2,"), "{summary}");
}
