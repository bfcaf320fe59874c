// index.wgsl: integer-indexed row access on (rows, cols) f32 matrices, and top-2 selection.
//
// Entry points (tail guarded, outputs overwritten):
//   gather_rows_fwd  out[n, :] = table[idx[n], :]          workgroup 256 over N*cols
//                    0 table (R, cols), 1 idx (N,) u32, 2 out (N, cols)
//   gather_rows_bwd  dtable[r, c] = sum over n with idx[n] == r of g[n, c]   (deterministic: no
//                    atomics; each thread owns one (r, c) and scans the N indices)
//                    workgroup 256 over R*cols; 0 idx (N,) u32, 1 g (N, cols), 2 dtable (R, cols)
//   top2             first[n] = argmax_j x[n, j], second[n] = argmax over j != first[n]; ties go
//                    to the lower index (as torch.topk on CPU and CUDA does for distinct values)
//                    workgroup 64 over N; 0 x (N, cols), 1 first (N,) u32, 2 second (N,) u32

struct Params {
    n: u32,      // rows of the index / output
    cols: u32,
    rows: u32,   // rows of the table
    _p0: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> table: array<f32>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@group(0) @binding(0) var<storage, read> bwd_idx: array<u32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;

@group(0) @binding(1) var<storage, read_write> first: array<u32>;
@group(0) @binding(2) var<storage, read_write> second: array<u32>;

@compute @workgroup_size(WG)
fn gather_rows_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    out[i] = table[idx[r] * p.cols + c];
}

@compute @workgroup_size(WG)
fn gather_rows_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        if (bwd_idx[n] == r) {
            acc += grad[n * p.cols + c];
        }
    }
    out[i] = acc;
}

@compute @workgroup_size(WG_ROWS)
fn top2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.n) { return; }
    let base = r * p.cols;
    var i1 = 0u;
    for (var j = 1u; j < p.cols; j++) {
        if (table[base + j] > table[base + i1]) { i1 = j; }
    }
    var i2 = select(0u, 1u, i1 == 0u);
    for (var j = 0u; j < p.cols; j++) {
        if (j != i1 && table[base + j] > table[base + i2]) { i2 = j; }
    }
    first[r] = i1;
    second[r] = i2;
}
