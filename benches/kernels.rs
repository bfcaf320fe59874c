//! Kernel microbenchmarks at the real ResNet-18 shapes: `cargo bench --bench kernels`.
//!
//! Every convolution shape of ResNet-18 (forward, backward-data, backward-weight), batch norm
//! forward/backward, the CIFS probe and mask, SGD over all parameters, the PGD step, plus an
//! SGEMM and a buffer copy that measure the device's own ceilings. Each is the median of several
//! runs timed with GPU timestamps (wall clock where the adapter has none), reported as GFLOP/s or
//! GB/s and as % of the measured ceiling; JSON goes to `target/bench-kernels.json` (or
//! `BENCH_JSON`). `BENCH_BATCH` (default 128) and `BENCH_WIDTH` (default 64) shrink the shapes
//! for slow adapters such as lavapipe; `BENCH_REPS` sets the runs per kernel (default 10).
//! Each convolution kernel is timed under every tile configuration (`engine::tune::Tile`); its
//! row reports the fastest, and the JSON lists them all with the heuristic's pick beside.

use cifs::models::probe::{PairRule, Probe};
use engine::ops::{attack, batchnorm, conv2d, linear, optim};
use engine::tune::{Gemm, GemmTile, Tile};
use engine::Rng;
use engine::{KernelOptions, Runtime, RuntimeOptions, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Row {
    name: String,
    median_ms: f64,
    /// GFLOP/s for compute-bound kernels, GB/s for memory-bound ones.
    rate: f64,
    unit: &'static str,
    /// Convolutions: the median under each tile configuration, and the heuristic's pick.
    tiles: Vec<(Tile, f64)>,
    heuristic: Option<Tile>,
}

/// The median of `f` under each tile configuration the adapter's workgroup memory holds, fastest
/// first.
fn per_tile(rt: &Runtime, reps: usize, mut f: impl FnMut(&Runtime)) -> Vec<(Tile, f64)> {
    let limit = rt.limits().max_workgroup_memory;
    let mut out: Vec<(Tile, f64)> = Tile::ALL
        .into_iter()
        .filter(|t| t.workgroup_bytes() <= limit)
        .map(|t| {
            let on_tile = rt.with_kernels(KernelOptions { tile: Some(GemmTile::Simt(t)), ..rt.kernels() });
            (t, measure(&on_tile, reps, || f(&on_tile)))
        })
        .collect();
    out.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap());
    out
}

fn measure(rt: &Runtime, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1)).map(|_| rt.timed(&mut f).expect("timing").1 * 1e3).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn rand(rt: &Runtime, rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::from_f32(rt, shape, &rng.uniform_vec(shape.iter().product(), -1.0, 1.0)).unwrap()
}

/// One kernel's row: its time and rate (`work` per ms, in `unit`).
fn push(rows: &mut Vec<Row>, name: String, ms: f64, work: f64, unit: &'static str) {
    println!("  {name:<44} {ms:>10.3} ms {:>9.1} {unit}", work / ms / 1e6);
    rows.push(Row { name, median_ms: ms, rate: work / ms / 1e6, unit, tiles: Vec::new(), heuristic: None });
}

/// A convolution kernel's row: the fastest tile's time and rate, then every tile's.
fn push_conv(rows: &mut Vec<Row>, name: String, tiles: Vec<(Tile, f64)>, heuristic: Tile, flops: f64) {
    let (best, ms) = tiles[0];
    let all: Vec<String> = tiles.iter().map(|(t, ms)| format!("{} {ms:.3}", t.name())).collect();
    println!(
        "  {name:<44} {ms:>10.3} ms {:>9.1} GFLOP/s  best {} (heuristic {}; {})",
        flops / ms / 1e6,
        best.name(),
        heuristic.name(),
        all.join(", ")
    );
    rows.push(Row { name, median_ms: ms, rate: flops / ms / 1e6, unit: "GFLOP/s", tiles, heuristic: Some(heuristic) });
}

/// Batch norm at the largest and smallest maps of width `w`, batch `b`, `reps` runs each (bytes:
/// read x, write y; backward reads x, g twice).
fn bench_batchnorm(rt: &Runtime, rng: &mut Rng, rows: &mut Vec<Row>, (b, w, reps): (usize, usize, usize)) {
    for (c, hw) in [(w, 32), (8 * w, 4)] {
        let x = rand(rt, rng, &[b, c, hw, hw]).requiring_grad();
        let (g, be) = (rand(rt, rng, &[c]).requiring_grad(), rand(rt, rng, &[c]).requiring_grad());
        let (rm, rv) = (Tensor::zeros(rt, &[c]).unwrap(), Tensor::from_f32(rt, &[c], &vec![1.0; c]).unwrap());
        let bytes = x.numel() as f64 * 4.0;
        let ms = measure(rt, reps, || {
            drop(batchnorm::batchnorm2d(rt, &x, &g, &be, batchnorm::RunningStats { mean: &rm, var: &rv }, true).unwrap())
        });
        push(rows, format!("batchnorm fwd train {c}x{hw}x{hw}"), ms, 4.0 * bytes, "GB/s");
        let y = batchnorm::batchnorm2d(rt, &x, &g, &be, batchnorm::RunningStats { mean: &rm, var: &rv }, true).unwrap();
        let seed = rand(rt, rng, y.shape());
        let ms = measure(rt, reps, || drop(engine::autodiff::backward_with(rt, &y, seed.clone()).unwrap()));
        push(rows, format!("batchnorm bwd {c}x{hw}x{hw}"), ms, 5.0 * bytes, "GB/s");
        // Eval mode, as in every attack step: fused BN-ReLU forward, input gradient only (bytes:
        // read x, write y; backward reads g and y, writes dx).
        let (gf, bf) = (g.detach(), be.detach());
        let act = batchnorm::Act { residual: None, relu: true };
        let ms = measure(rt, reps, || {
            drop(batchnorm::batchnorm_act(rt, &x, &gf, &bf, batchnorm::RunningStats { mean: &rm, var: &rv }, false, act).unwrap())
        });
        push(rows, format!("batchnorm-relu fwd eval {c}x{hw}x{hw}"), ms, 2.0 * bytes, "GB/s");
        let y = batchnorm::batchnorm_act(rt, &x, &gf, &bf, batchnorm::RunningStats { mean: &rm, var: &rv }, false, act).unwrap();
        let ms = measure(rt, reps, || drop(engine::autodiff::backward_with(rt, &y, seed.clone()).unwrap()));
        push(rows, format!("batchnorm-relu bwd eval {c}x{hw}x{hw}"), ms, 3.0 * bytes, "GB/s");
    }
}

/// The rows as JSON (`BENCH_JSON`, or target/bench-kernels.json), each with its share of the
/// ceilings: the best GEMM-shaped kernel's GFLOP/s and the copy's GB/s.
fn write_json(rows: &[Row], adapter: &str, b: usize, w: usize) {
    let flops_ceiling = rows.iter().filter(|r| r.unit == "GFLOP/s").map(|r| r.rate).fold(0.0, f64::max);
    let bw_ceiling = rows[1].rate;
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            let ceiling = if r.unit == "GFLOP/s" { flops_ceiling } else { bw_ceiling };
            let tiles: Vec<String> = r.tiles.iter().map(|(t, ms)| format!("\"{}\":{ms:.4}", t.name())).collect();
            let tiles = match r.heuristic {
                Some(h) => {
                    format!(r#","best_tile":"{}","heuristic_tile":"{}","tile_ms":{{{}}}"#, r.tiles[0].0.name(), h.name(), tiles.join(","))
                }
                None => String::new(),
            };
            format!(
                r#"{{"kernel":"{}","median_ms":{:.4},"rate":{:.2},"unit":"{}","percent_of_ceiling":{:.1}{tiles}}}"#,
                r.name,
                r.median_ms,
                r.rate,
                r.unit,
                100.0 * r.rate / ceiling
            )
        })
        .collect();
    let path =
        std::env::var("BENCH_JSON").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-kernels.json").to_string());
    let doc = format!(
    "{{\"adapter\":\"{}\",\"batch\":{b},\"width\":{w},\"flops_ceiling_gflops\":{flops_ceiling:.1},\"copy_ceiling_gbs\":{bw_ceiling:.1},\"kernels\":[\n{}\n]}}\n",
    adapter,
    json.join(",\n")
);
    std::fs::write(&path, doc).expect("write JSON");
    println!("ceilings: {flops_ceiling:.1} GFLOP/s (best GEMM-shaped kernel), {bw_ceiling:.1} GB/s (copy); JSON in {path}");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kernel benchmarks: run with `cargo bench --bench kernels`");
        return;
    }
    let rt = Runtime::new(RuntimeOptions::from_env().unwrap_or_else(|e| panic!("{e}"))).expect("a GPU adapter");
    let (b, w, reps) = (env("BENCH_BATCH", 128), env("BENCH_WIDTH", 64), env("BENCH_REPS", 10));
    let adapter = rt.adapter();
    println!("adapter: {} ({}); batch {b}, width {w}, {reps} runs per kernel", adapter.name, adapter.backend);
    let mut rng = Rng::new(0);
    let mut rows: Vec<Row> = Vec::new();

    // Ceilings: SGEMM (the conv GEMM engine as a dense matmul) and a device-side copy.
    let n = env("BENCH_GEMM", 2048);
    let (a, bm) = (rand(&rt, &mut rng, &[n, n]), rand(&rt, &mut rng, &[n, n]));
    let ms = measure(&rt, reps, || drop(linear::matmul_nn(&rt, &a, &bm).unwrap()));
    push(&mut rows, format!("sgemm {n}x{n}x{n}"), ms, 2.0 * (n as f64).powi(3), "GFLOP/s");
    let big = rand(&rt, &mut rng, &[1 << 24]);
    let dst = Tensor::empty(&rt, &[1 << 24]).unwrap();
    let ms = measure(&rt, reps, || dst.copy_from(&rt, &big).unwrap());
    push(&mut rows, "copy 64 MiB (read + write)".into(), ms, 2.0 * (4u64 << 24) as f64, "GB/s");

    // Convolutions: (input channels, size, output channels, kernel, stride).
    let convs = [
        ("stem", 3, 32, w, 3, 1),
        ("layer1", w, 32, w, 3, 1),
        ("layer2.0.conv1", w, 32, 2 * w, 3, 2),
        ("layer2 shortcut", w, 32, 2 * w, 1, 2),
        ("layer2", 2 * w, 16, 2 * w, 3, 1),
        ("layer3.0.conv1", 2 * w, 16, 4 * w, 3, 2),
        ("layer3", 4 * w, 8, 4 * w, 3, 1),
        ("layer4.0.conv1", 4 * w, 8, 8 * w, 3, 2),
        ("layer4", 8 * w, 4, 8 * w, 3, 1),
    ];
    for (name, ci, hw, co, k, s) in convs {
        let x = rand(&rt, &mut rng, &[b, ci, hw, hw]);
        let wt = rand(&rt, &mut rng, &[co, ci, k, k]);
        let pad = (k as u32 - 1) / 2;
        let y = conv2d::conv2d(&rt, &x, &wt, s, pad).unwrap();
        let flops = 2.0 * y.numel() as f64 * (ci * k * k) as f64;
        let heuristic = |gemm| conv2d::heuristic_tile(gemm, x.shape(), wt.shape(), s, pad).unwrap();
        let tiles = per_tile(&rt, reps, |rt| drop(conv2d::conv2d(rt, &x, &wt, s, pad).unwrap()));
        push_conv(&mut rows, format!("conv fwd {name} {ci}->{co} {hw}x{hw} k{k} s{s}"), tiles, heuristic(Gemm::ConvForward), flops);
        let tiles = per_tile(&rt, reps, |rt| drop(conv2d::conv2d_backward_data(rt, x.shape(), &wt, s, pad, &y).unwrap()));
        push_conv(&mut rows, format!("conv bwd-data {name}"), tiles, heuristic(Gemm::ConvBackwardData), flops);
        let tiles = per_tile(&rt, reps, |rt| drop(conv2d::conv2d_backward_weight(rt, &x, wt.shape(), s, pad, &y).unwrap()));
        push_conv(&mut rows, format!("conv bwd-weight {name}"), tiles, heuristic(Gemm::ConvBackwardWeight), flops);
    }

    bench_batchnorm(&rt, &mut rng, &mut rows, (b, w, reps));

    // CIFS: probe, pair, relevance, mask on the layer4 output (nonlinear probe, train rule).
    let probe = Probe::nonlinear(&rt, "layer4.0.Probe", 8 * w, cifs::models::probe::PROBE_HIDDEN, 10, &mut rng).unwrap();
    let z = rand(&rt, &mut rng, &[b, 8 * w, 4, 4]);
    let labels = Tensor::from_u32(&rt, &[b], &(0..b as u32).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
    let ms = measure(&rt, reps, || drop(probe.apply(&rt, &z, PairRule::Train(&labels), true).unwrap()));
    push(&mut rows, format!("cifs nonlinear probe + mask {}x4x4", 8 * w), ms, 3.0 * z.numel() as f64 * 4.0, "GB/s");
    // The same under the eval rule with the probe's weights frozen, as in every attack step.
    let ms = measure(&rt, reps, || drop(probe.apply(&rt, &z, PairRule::Eval, false).unwrap()));
    push(&mut rows, format!("cifs nonlinear probe + mask eval {}x4x4", 8 * w), ms, 3.0 * z.numel() as f64 * 4.0, "GB/s");

    // SGD over ResNet-18's 11.2M parameters (scaled by width), and one PGD step on the images.
    let params = 11_170_000 * w * w / (64 * 64);
    let (p, v, g) = (rand(&rt, &mut rng, &[params]), Tensor::zeros(&rt, &[params]).unwrap(), rand(&rt, &mut rng, &[params]));
    let ms = measure(&rt, reps, || optim::sgd_step(&rt, &p, &v, &g, 0.1, 0.9, 2e-4).unwrap());
    push(&mut rows, format!("sgd step {params} params"), ms, 5.0 * params as f64 * 4.0, "GB/s");
    let (x, gx, d) =
        (rand(&rt, &mut rng, &[b, 3, 32, 32]), rand(&rt, &mut rng, &[b, 3, 32, 32]), Tensor::zeros(&rt, &[b, 3, 32, 32]).unwrap());
    let ms = measure(&rt, reps, || drop(attack::pgd_step(&rt, &x, &gx, &d, 8.0 / 255.0, 2.0 / 255.0).unwrap()));
    push(&mut rows, format!("pgd step {b}x3x32x32"), ms, 5.0 * x.numel() as f64 * 4.0, "GB/s");

    write_json(&rows, &adapter.name, b, w);
}
