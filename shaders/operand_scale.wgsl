// operand_scale.wgsl: the largest magnitude of each operand of a GEMM run in f16, found on the GPU
// (no readback): the f16 GEMM (conv2d.wgsl with F16 = 1) reads it and scales each operand by
// the power of two that puts its largest magnitude in [2^14, 2^15), so no operand overflows f16
// and small values keep their digits.
//
// The epilogue buffer of an f16 GEMM (binding 3 of conv2d.wgsl) holds
//   [0] bits of max |A|, [1] bits of max |B|, [2..2+nbias) the bias (f32), if any.
// Magnitudes are compared as u32 bit patterns: for non-negative floats the order is the same
// (a NaN compares above infinity and stays visible).
//
//   scale_begin   one thread per word: zeroes [0], [1] and copies the bias after them.
//                 bindings: 0 bias (a stand-in when nbias = 0), 1 epilogue buffer (overwritten)
//   scale_maxabs  grid (groups, 2): workgroups of row y reduce operand y (0: a, 1: b) by
//                 striding over it, then one atomicMax per workgroup into word y.
//                 bindings: 0 a, 1 b, 2 epilogue buffer (words 0 and 1 raised)

struct Params {
    na: u32,
    nb: u32,
    nbias: u32,
    groups: u32, // workgroups per operand (grid x)
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> src_a: array<f32>;
@group(0) @binding(1) var<storage, read> src_b: array<f32>;
@group(0) @binding(1) var<storage, read_write> epilogue: array<f32>; // scale_begin only
@group(0) @binding(2) var<storage, read_write> max_bits: array<atomic<u32>>;

// WG (256, from grid.wgsl): the threads of a scale_maxabs workgroup.
var<workgroup> lane_max: array<u32, WG>;

@compute @workgroup_size(64)
fn scale_begin(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i < 2u) {
        epilogue[i] = 0.0;
    } else if (i < 2u + p.nbias) {
        epilogue[i] = src_a[i - 2u];
    }
}

fn magnitude_bits(v: f32) -> u32 {
    return bitcast<u32>(v) & 0x7fffffffu;
}

@compute @workgroup_size(WG)
fn scale_maxabs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = select(p.na, p.nb, wid.y == 1u);
    var m = 0u;
    for (var i = wid.x * WG + lid; i < n; i += p.groups * WG) {
        if (wid.y == 0u) {
            m = max(m, magnitude_bits(src_a[i]));
        } else {
            m = max(m, magnitude_bits(src_b[i]));
        }
    }
    lane_max[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lane_max[lid] = max(lane_max[lid], lane_max[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        atomicMax(&max_bits[wid.y], lane_max[0]);
    }
}
