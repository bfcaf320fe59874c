// reduce.wgsl: column sums of a (rows, cols) matrix: out[c] = sum_r x[r, c].
// Used for bias gradients (rows = batch) and to fold split-K partial products (rows = splits).
//
// Entry point sum_rows: workgroup 256, 1-D grid over cols, tail guarded; 0 x, 1 out (overwritten).

struct Params {
    rows: u32,
    cols: u32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn sum_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.cols) { return; }
    var acc = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        acc += src[r * p.cols + c];
    }
    dst[c] = acc;
}
