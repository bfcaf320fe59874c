// random.wgsl: counter-based uniform random numbers on the GPU, so a random start needs no host
// upload (and no submit in the middle of a step). Element i of a fill with a 64-bit seed takes
// u = (h >> 8) / 2^24 from a PCG hash h of (seed, i): the same stream on the CPU
// (engine::reference::uniform) and on any GPU.
//
// Entry point uniform_fill (1-D, split over x/y): out[i] = lo + (hi - lo) * u(seed, i).
// 0 out (overwritten).

struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    _p0: u32,
    lo: f32,
    hi: f32,
    _p1: u32,
    _p2: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;

// PCG's output permutation of one LCG step (Jarzynski and Olano, "Hash Functions for GPU
// Rendering", 2020).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(WG)
fn uniform_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let h = pcg(i ^ pcg(p.seed_lo ^ pcg(p.seed_hi)));
    let u = f32(h >> 8u) * (1.0 / 16777216.0);
    out[i] = p.lo + (p.hi - p.lo) * u;
}
