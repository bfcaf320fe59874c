//! Kernel microbenchmarks at the real ResNet-18 shapes: `cargo bench --bench kernels`.
//!
//! Every convolution shape of ResNet-18 (forward, backward-data, backward-weight), batch norm
//! forward/backward, the CIFS probe and mask, SGD over all parameters, the PGD step, plus an
//! SGEMM and a buffer copy that measure the device's own ceilings. Each is the median of several
//! runs timed with GPU timestamps (wall clock where the adapter has none), reported as GFLOP/s or
//! GB/s and as % of the measured ceiling; JSON goes to `target/bench-kernels.json` (or
//! `BENCH_JSON`). `BENCH_BATCH` (default 128) and `BENCH_WIDTH` (default 64) shrink the shapes
//! for slow adapters such as lavapipe; `BENCH_REPS` sets the runs per kernel (default 10).

use cifs::probe::{PairRule, Probe};
use datasets::Rng;
use engine::ops::{attack, batchnorm, conv2d, linear, optim};
use engine::{Gpu, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Row {
    name: String,
    median_ms: f64,
    /// GFLOP/s for compute-bound kernels, GB/s for memory-bound ones.
    rate: f64,
    unit: &'static str,
}

fn measure(gpu: &Gpu, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1)).map(|_| gpu.timed(&mut f).expect("timing").1 * 1e3).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn rand(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::from_f32(gpu, shape, &rng.uniform_vec(shape.iter().product(), -1.0, 1.0)).unwrap()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kernel benchmarks: run with `cargo bench --bench kernels`");
        return;
    }
    let gpu = Gpu::new().expect("a GPU adapter");
    let (b, w, reps) = (env("BENCH_BATCH", 128), env("BENCH_WIDTH", 64), env("BENCH_REPS", 10));
    println!("adapter: {} ({:?}); batch {b}, width {w}, {reps} runs per kernel", gpu.info.name, gpu.info.backend);
    let mut rng = Rng::new(0);
    let mut rows: Vec<Row> = Vec::new();
    let push = |rows: &mut Vec<Row>, name: String, ms: f64, work: f64, unit: &'static str| {
        println!("  {name:<44} {ms:>10.3} ms {:>9.1} {unit}", work / ms / 1e6);
        rows.push(Row { name, median_ms: ms, rate: work / ms / 1e6, unit });
    };

    // Ceilings: SGEMM (the conv GEMM engine as a dense matmul) and a device-side copy.
    let n = env("BENCH_GEMM", 2048);
    let (a, bm) = (rand(&gpu, &mut rng, &[n, n]), rand(&gpu, &mut rng, &[n, n]));
    let ms = measure(&gpu, reps, || drop(linear::matmul_nn(&gpu, &a, &bm).unwrap()));
    push(&mut rows, format!("sgemm {n}x{n}x{n}"), ms, 2.0 * (n as f64).powi(3), "GFLOP/s");
    let big = rand(&gpu, &mut rng, &[1 << 24]);
    let dst = Tensor::empty(&gpu, &[1 << 24]).unwrap();
    let ms = measure(&gpu, reps, || gpu.copy(big.buffer(), dst.buffer(), 4 << 24));
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
        let x = rand(&gpu, &mut rng, &[b, ci, hw, hw]);
        let wt = rand(&gpu, &mut rng, &[co, ci, k, k]);
        let pad = (k as u32 - 1) / 2;
        let y = conv2d::conv2d(&gpu, &x, &wt, s, pad).unwrap();
        let flops = 2.0 * y.numel() as f64 * (ci * k * k) as f64;
        let ms = measure(&gpu, reps, || drop(conv2d::conv2d(&gpu, &x, &wt, s, pad).unwrap()));
        push(&mut rows, format!("conv fwd {name} {ci}->{co} {hw}x{hw} k{k} s{s}"), ms, flops, "GFLOP/s");
        let ms = measure(&gpu, reps, || drop(conv2d::conv2d_backward_data(&gpu, x.shape(), &wt, s, pad, &y).unwrap()));
        push(&mut rows, format!("conv bwd-data {name}"), ms, flops, "GFLOP/s");
        let ms = measure(&gpu, reps, || drop(conv2d::conv2d_backward_weight(&gpu, &x, wt.shape(), s, pad, &y).unwrap()));
        push(&mut rows, format!("conv bwd-weight {name}"), ms, flops, "GFLOP/s");
    }

    // Batch norm at the largest and smallest maps (bytes: read x, write y; backward reads x, g twice).
    for (c, hw) in [(w, 32), (8 * w, 4)] {
        let x = rand(&gpu, &mut rng, &[b, c, hw, hw]).requiring_grad(&gpu);
        let (g, be) = (rand(&gpu, &mut rng, &[c]).requiring_grad(&gpu), rand(&gpu, &mut rng, &[c]).requiring_grad(&gpu));
        let (rm, rv) = (Tensor::zeros(&gpu, &[c]).unwrap(), Tensor::from_f32(&gpu, &[c], &vec![1.0; c]).unwrap());
        let bytes = x.numel() as f64 * 4.0;
        let ms = measure(&gpu, reps, || drop(batchnorm::batchnorm2d(&gpu, &x, &g, &be, batchnorm::RunningStats { mean: &rm, var: &rv }, true).unwrap()));
        push(&mut rows, format!("batchnorm fwd train {c}x{hw}x{hw}"), ms, 4.0 * bytes, "GB/s");
        let y = batchnorm::batchnorm2d(&gpu, &x, &g, &be, batchnorm::RunningStats { mean: &rm, var: &rv }, true).unwrap();
        let seed = rand(&gpu, &mut rng, y.shape());
        let ms = measure(&gpu, reps, || drop(engine::autodiff::backward_with(&gpu, &y, seed.clone()).unwrap()));
        push(&mut rows, format!("batchnorm bwd {c}x{hw}x{hw}"), ms, 5.0 * bytes, "GB/s");
    }

    // CIFS: probe, pair, relevance, mask on the layer4 output (nonlinear probe, train rule).
    let probe = Probe::nonlinear(&gpu, "layer4.0", 8 * w, 10, &mut rng).unwrap();
    let z = rand(&gpu, &mut rng, &[b, 8 * w, 4, 4]);
    let labels = Tensor::from_u32(&gpu, &[b], &(0..b as u32).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
    let ms = measure(&gpu, reps, || drop(probe.apply(&gpu, &z, PairRule::Train(&labels), true).unwrap()));
    push(&mut rows, format!("cifs nonlinear probe + mask {}x4x4", 8 * w), ms, 3.0 * z.numel() as f64 * 4.0, "GB/s");

    // SGD over ResNet-18's 11.2M parameters (scaled by width), and one PGD step on the images.
    let params = 11_170_000 * w * w / (64 * 64);
    let (p, v, g) = (rand(&gpu, &mut rng, &[params]), Tensor::zeros(&gpu, &[params]).unwrap(), rand(&gpu, &mut rng, &[params]));
    let ms = measure(&gpu, reps, || optim::sgd_step(&gpu, &p, &v, &g, 0.1, 0.9, 2e-4).unwrap());
    push(&mut rows, format!("sgd step {params} params"), ms, 5.0 * params as f64 * 4.0, "GB/s");
    let (x, gx, d) = (rand(&gpu, &mut rng, &[b, 3, 32, 32]), rand(&gpu, &mut rng, &[b, 3, 32, 32]), Tensor::zeros(&gpu, &[b, 3, 32, 32]).unwrap());
    let ms = measure(&gpu, reps, || drop(attack::pgd_step(&gpu, &x, &gx, &d, 8.0 / 255.0, 2.0 / 255.0).unwrap()));
    push(&mut rows, format!("pgd step {b}x3x32x32"), ms, 5.0 * x.numel() as f64 * 4.0, "GB/s");

    let flops_ceiling = rows.iter().filter(|r| r.unit == "GFLOP/s").map(|r| r.rate).fold(0.0, f64::max);
    let bw_ceiling = rows[1].rate;
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            let ceiling = if r.unit == "GFLOP/s" { flops_ceiling } else { bw_ceiling };
            format!(
                r#"{{"kernel":"{}","median_ms":{:.4},"rate":{:.2},"unit":"{}","percent_of_ceiling":{:.1}}}"#,
                r.name, r.median_ms, r.rate, r.unit, 100.0 * r.rate / ceiling
            )
        })
        .collect();
    let path = std::env::var("BENCH_JSON").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-kernels.json").to_string());
    let doc = format!(
        "{{\"adapter\":\"{}\",\"batch\":{b},\"width\":{w},\"flops_ceiling_gflops\":{flops_ceiling:.1},\"copy_ceiling_gbs\":{bw_ceiling:.1},\"kernels\":[\n{}\n]}}\n",
        gpu.info.name,
        json.join(",\n")
    );
    std::fs::write(&path, doc).expect("write JSON");
    println!("ceilings: {flops_ceiling:.1} GFLOP/s (best GEMM-shaped kernel), {bw_ceiling:.1} GB/s (copy); JSON in {path}");
}
