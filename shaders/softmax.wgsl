// softmax.wgsl: softmax over the last dimension of a (rows, cols) matrix, one thread per row.
// Rows are short here (10 classes, or C <= 512 channels of a CIFS mask), so a thread loops over
// its row; max-subtraction keeps exp in range.
//
// Entry points (workgroup 64, one thread per row, tail guarded, outputs overwritten):
//   softmax_fwd  y = exp(x - max) / sum                 0 x, 1 y
//   softmax_bwd  dx = y * (g - sum_j g_j y_j)           0 y, 1 g, 2 dx

struct Params {
    rows: u32,
    cols: u32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> dsrc: array<f32>;

@compute @workgroup_size(WG_ROWS)
fn softmax_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var mx = src[base];
    for (var j = 1u; j < p.cols; j++) {
        mx = max(mx, src[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        sum += exp(src[base + j] - mx);
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.cols; j++) {
        dst[base + j] = exp(src[base + j] - mx) * inv;
    }
}

@compute @workgroup_size(WG_ROWS)
fn softmax_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var dot = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        dot += grad[base + j] * src[base + j];
    }
    for (var j = 0u; j < p.cols; j++) {
        dsrc[base + j] = src[base + j] * (grad[base + j] - dot);
    }
}
