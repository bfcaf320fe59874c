//! GPU uniform random numbers: the CPU reference's stream, element by element; values in range
//! and spread over it; a different seed, a different stream.

use crate::common::*;
use engine::ops::random::uniform;
use engine_reference as cpu;

#[test]
fn uniform_matches_the_cpu_stream_and_covers_its_range() {
    let rt = rt();
    let n = 70_001;
    let seed = 0x0123_4567_89AB_CDEF;
    let got = uniform(&rt, &[n], -0.25, 0.75, seed).unwrap().to_vec(&rt).unwrap();
    let want = cpu::uniform(n, -0.25, 0.75, seed);
    // Equal up to one rounding of lo + (hi - lo) u (a fused multiply-add on some GPUs).
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(approx::abs_diff_eq!(g, w, epsilon = 1e-7), "element {i}: {g} vs {w}");
    }
    assert!(got.iter().all(|v| (-0.25..0.75).contains(v)));
    let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!((mean - 0.25).abs() < 0.01, "mean {mean}");
    let below: usize = got.iter().filter(|&&v| v < 0.0).count();
    assert!((below as f64 / n as f64 - 0.25).abs() < 0.01, "share below 0: {below}");
    let other = uniform(&rt, &[n], -0.25, 0.75, seed + 1).unwrap().to_vec(&rt).unwrap();
    assert!(other.iter().zip(&got).filter(|(a, b)| a == b).count() < n / 1000, "seeds give different streams");
}
