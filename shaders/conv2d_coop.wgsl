// conv2d_coop.wgsl: the three convolution GEMMs of conv2d.wgsl (forward with the dense layers'
// bias, backward-data by output phase, backward-weight; split-K slabs as there) on cooperative
// matrices: tensor cores, f16 operands, f32 accumulation. Compiled after coop8.wgsl or
// coop16.wgsl (the enables, the matrix types CoopA, CoopB, CoopC of side CS) and with
// conv2d.wgsl specialised to F16 = 1, whose code it runs: the GEMM geometry (gemm_of), the
// gathers (prepare, load_a, load_b), the operand scaling and rounding (operand: the power of two
// of operand_scale.wgsl, f16 round-to-nearest-even) and the epilogue (unscaled, store: bias,
// split-K slab, NCHW). The operands are therefore the very f16 values the SIMT emulation
// multiplies; the products are exact in f32, so only how the f32 sums are formed differs (their
// order, and on some hardware a block of products aligned and added at once, truncated).
//
// Entry points conv2d_fwd_coop, conv2d_bwd_data_coop, conv2d_bwd_weight_coop: bindings and grid
// as conv2d_fwd, conv2d_bwd_data, conv2d_bwd_weight (grid x over TM rows, y over TN columns).
//
// Layout: WM x WN subgroups each own FM x FN accumulators of CS x CS outputs, so a workgroup
// computes a TM x TN tile, TM = WM FM CS, TN = WN FN CS (specialisation constants, chosen per
// shape by engine/src/tune.rs). The depth advances in slices of TK = 2 CS: every thread gathers
// its share of the next slice into registers (LA values of A, LB of B, already scaled and
// rounded to f16) while the subgroups multiply the current one, then stores it into the other
// of two workgroup tiles (double buffering: one barrier per slice). A is staged depth-major
// (column-major M x K); B column-major (column-major K x N, contiguous along K as the weights)
// except for the weight gradient, whose B is gathered along N and staged row-major.
//
// Subgroups: the workgroup has NT = WM WN SG threads, SG the adapter's largest subgroup size,
// so it holds at least WM WN subgroups of any size the adapter may run it with. Assumed: the
// subgroups are full (NT is a multiple of every power-of-two size up to SG) and of a size in
// the adapter's range. Subgroup `sid` computes the fragments of position sid % (WM WN); a
// subgroup past WM WN (only when the adapter runs smaller subgroups than SG) repeats that work
// and stores nothing. Nothing else depends on the subgroup size: staging is by thread index, the
// epilogue by subgroup_invocation_id over subgroup_size.
//
// Uniformity: every cooperative-matrix operation runs in workgroup-uniform control flow (loops
// over the depth range of the workgroup, from workgroup_id and the immediates; branches on
// constants); subgroup ids select only which tile memory they read. naga's analysis takes every
// argument of a helper function for non-uniform, so the functions that hold those operations
// turn its derivative_uniformity diagnostic off.

const WM: u32 = 2u;
const WN: u32 = 2u;
const FM: u32 = 2u;
const FN: u32 = 2u;
// The adapter's largest subgroup size (its `subgroup_max_size`).
const SG: u32 = 8u;
const WARPS: u32 = WM * WN;
const NT: u32 = WARPS * SG;
const TM: u32 = WM * FM * CS;
const TN: u32 = WN * FN * CS;
const TK: u32 = 2u * CS;
// Values of one slice each thread stages (the host registers only tiles with NT >= TM, TN, TK,
// so each thread gathers one row of A and, for the weight gradient, one column of B).
const LA: u32 = TM * TK / NT;
const LB: u32 = TN * TK / NT;
// Tile rows are padded by 8 f16 (16 bytes): fragment loads need 16-byte aligned starts and
// strides, and the padding spreads a fragment's rows over the banks.
const PAD: u32 = 8u;
const LDA: u32 = TM + PAD;
const LDB_ROWS: u32 = TN + PAD; // weight gradient: B row-major, a depth per row
const LDB_COLS: u32 = TK + PAD; // otherwise: B column-major, a column per row
const COOP_A_TILE: u32 = TK * LDA;
const COOP_B_TILE: u32 = max(TK * LDB_ROWS, TN * LDB_COLS);
var<workgroup> coop_a: array<f16, 2u * COOP_A_TILE>;
var<workgroup> coop_b: array<f16, 2u * COOP_B_TILE>;
// Epilogue: each subgroup stores one accumulator at a time here (slot WARPS: the repeats'),
// and its threads take the values to their places in the output.
var<workgroup> coop_out: array<f32, (WARPS + 1u) * CS * CS>;

// One slice of one thread, scaled and rounded to f16.
struct Staged {
    a: array<f16, LA>,
    b: array<f16, LB>,
}

fn stage_fetch(mode: u32, f: Gemm, g: Gather, lid: u32, n0: u32, k0: u32) -> Staged {
    var s: Staged;
    for (var r = 0u; r < LA; r++) {
        let k = k0 + lid / TM + (NT / TM) * r;
        var v = 0.0;
        if (g.row_ok && k < f.k_end) {
            v = load_a(mode, f, g, k);
        }
        s.a[r] = f16(operand(v, 0u));
    }
    for (var r = 0u; r < LB; r++) {
        var v = 0.0;
        if (mode == BWD_WEIGHT) {
            let k = k0 + lid / TN + (NT / TN) * r;
            if (g.col_ok && k < f.k_end) {
                v = load_b(mode, g, k);
            }
        } else { // the (flipped) weights, contiguous along K: consecutive threads, consecutive depths
            let k = k0 + lid % TK;
            let j = n0 + lid / TK + (NT / TK) * r;
            if (j < p.gn && k < f.k_end) {
                v = src_b[f.b_off + j * f.gk + k];
            }
        }
        s.b[r] = f16(operand(v, 1u));
    }
    return s;
}

fn stage_put(mode: u32, lid: u32, buf: u32, s: Staged) {
    for (var r = 0u; r < LA; r++) {
        let kl = lid / TM + (NT / TM) * r;
        coop_a[buf * COOP_A_TILE + kl * LDA + lid % TM] = s.a[r];
    }
    for (var r = 0u; r < LB; r++) {
        if (mode == BWD_WEIGHT) {
            let kl = lid / TN + (NT / TN) * r;
            coop_b[buf * COOP_B_TILE + kl * LDB_ROWS + lid % TN] = s.b[r];
        } else {
            let col = lid / TK + (NT / TK) * r;
            coop_b[buf * COOP_B_TILE + col * LDB_COLS + lid % TK] = s.b[r];
        }
    }
}

// Fragment (row block i, depth block kf) of A in tile `buf`.
@diagnostic(off, derivative_uniformity)
fn frag_a(buf: u32, kf: u32, i: u32) -> CoopA {
    return coopLoad<CoopA>(&coop_a[buf * COOP_A_TILE + kf * CS * LDA + i * CS], LDA);
}

// Fragment (depth block kf, column block j) of B in tile `buf`.
@diagnostic(off, derivative_uniformity)
fn frag_b(mode: u32, buf: u32, kf: u32, j: u32) -> CoopB {
    if (mode == BWD_WEIGHT) {
        return coopLoadT<CoopB>(&coop_b[buf * COOP_B_TILE + kf * CS * LDB_ROWS + j * CS], LDB_ROWS);
    }
    return coopLoad<CoopB>(&coop_b[buf * COOP_B_TILE + j * CS * LDB_COLS + kf * CS], LDB_COLS);
}

// The FM x FN accumulators of one subgroup (named, not an array: every access is static; the
// ones a configuration does not use are compiled out, FM and FN being constants).
struct Acc {
    c00: CoopC, c01: CoopC, c02: CoopC, c03: CoopC,
    c10: CoopC, c11: CoopC, c12: CoopC, c13: CoopC,
    c20: CoopC, c21: CoopC, c22: CoopC, c23: CoopC,
    c30: CoopC, c31: CoopC, c32: CoopC, c33: CoopC,
}

// One slice of tile `buf` into the accumulators of the subgroup at block row wm, column wn.
@diagnostic(off, derivative_uniformity)
fn multiply_slice(mode: u32, buf: u32, wm: u32, wn: u32, acc: ptr<function, Acc>) {
    for (var kf = 0u; kf < TK / CS; kf++) {
        let i = wm * FM;
        let j = wn * FN;
        let a0 = frag_a(buf, kf, i);
        let b0 = frag_b(mode, buf, kf, j);
        var a1: CoopA;
        var b1: CoopB;
        var a2: CoopA;
        var a3: CoopA;
        var b2: CoopB;
        var b3: CoopB;
        if (FM > 1u) { a1 = frag_a(buf, kf, i + 1u); }
        if (FN > 1u) { b1 = frag_b(mode, buf, kf, j + 1u); }
        if (FM > 2u) { a2 = frag_a(buf, kf, i + 2u); a3 = frag_a(buf, kf, i + 3u); }
        if (FN > 2u) { b2 = frag_b(mode, buf, kf, j + 2u); b3 = frag_b(mode, buf, kf, j + 3u); }
        (*acc).c00 = coopMultiplyAdd(a0, b0, (*acc).c00);
        if (FN > 1u) { (*acc).c01 = coopMultiplyAdd(a0, b1, (*acc).c01); }
        if (FN > 2u) { (*acc).c02 = coopMultiplyAdd(a0, b2, (*acc).c02); (*acc).c03 = coopMultiplyAdd(a0, b3, (*acc).c03); }
        if (FM > 1u) {
            (*acc).c10 = coopMultiplyAdd(a1, b0, (*acc).c10);
            if (FN > 1u) { (*acc).c11 = coopMultiplyAdd(a1, b1, (*acc).c11); }
            if (FN > 2u) { (*acc).c12 = coopMultiplyAdd(a1, b2, (*acc).c12); (*acc).c13 = coopMultiplyAdd(a1, b3, (*acc).c13); }
        }
        if (FM > 2u) {
            (*acc).c20 = coopMultiplyAdd(a2, b0, (*acc).c20);
            (*acc).c30 = coopMultiplyAdd(a3, b0, (*acc).c30);
            if (FN > 1u) {
                (*acc).c21 = coopMultiplyAdd(a2, b1, (*acc).c21);
                (*acc).c31 = coopMultiplyAdd(a3, b1, (*acc).c31);
            }
            if (FN > 2u) {
                (*acc).c22 = coopMultiplyAdd(a2, b2, (*acc).c22);
                (*acc).c23 = coopMultiplyAdd(a2, b3, (*acc).c23);
                (*acc).c32 = coopMultiplyAdd(a3, b2, (*acc).c32);
                (*acc).c33 = coopMultiplyAdd(a3, b3, (*acc).c33);
            }
        }
    }
}

// Where the epilogue of one subgroup writes: its rows and columns, its threads, and whether it
// stores (a repeat does not).
struct Out {
    m: u32,       // first row and column of the subgroup's accumulator (0, 0)
    n: u32,
    slot: u32,    // its scratch in coop_out
    lane: u32,
    lanes: u32,
    stores: bool,
}

// Accumulator (i, j) of the subgroup: stored to its scratch (column-major: consecutive threads
// take consecutive rows, i.e. consecutive output pixels of the NCHW convolutions), then each
// value scaled back and stored (bias, slab, layout: conv2d.wgsl's `store`). Every subgroup
// calls it at the same points: it holds two workgroup barriers.
fn drain(mode: u32, f: Gemm, o: Out, i: u32, j: u32, c: CoopC) {
    let base = o.slot * CS * CS;
    coopStore(c, &coop_out[base], CS);
    workgroupBarrier();
    if (o.stores) {
        for (var e = o.lane; e < CS * CS; e += o.lanes) {
            let m = o.m + i * CS + e % CS;
            let n = o.n + j * CS + e / CS;
            if (m < f.gm && n < p.gn) {
                store(mode, f, m, n, unscaled(coop_out[base + e]));
            }
        }
    }
    workgroupBarrier();
}

fn drain_all(mode: u32, f: Gemm, o: Out, acc: Acc) {
    drain(mode, f, o, 0u, 0u, acc.c00);
    if (FN > 1u) { drain(mode, f, o, 0u, 1u, acc.c01); }
    if (FN > 2u) { drain(mode, f, o, 0u, 2u, acc.c02); drain(mode, f, o, 0u, 3u, acc.c03); }
    if (FM > 1u) {
        drain(mode, f, o, 1u, 0u, acc.c10);
        if (FN > 1u) { drain(mode, f, o, 1u, 1u, acc.c11); }
        if (FN > 2u) { drain(mode, f, o, 1u, 2u, acc.c12); drain(mode, f, o, 1u, 3u, acc.c13); }
    }
    if (FM > 2u) {
        drain(mode, f, o, 2u, 0u, acc.c20);
        drain(mode, f, o, 3u, 0u, acc.c30);
        if (FN > 1u) { drain(mode, f, o, 2u, 1u, acc.c21); drain(mode, f, o, 3u, 1u, acc.c31); }
        if (FN > 2u) {
            drain(mode, f, o, 2u, 2u, acc.c22);
            drain(mode, f, o, 2u, 3u, acc.c23);
            drain(mode, f, o, 3u, 2u, acc.c32);
            drain(mode, f, o, 3u, 3u, acc.c33);
        }
    }
}

@diagnostic(off, derivative_uniformity)
fn coop_gemm(mode: u32, wid: vec3<u32>, lid: u32, sid: u32, lane: u32, lanes: u32) {
    operand_exp = vec2<i32>(scale_exponent(bitcast<u32>(bias[0])), scale_exponent(bitcast<u32>(bias[1])));
    let f = gemm_of(mode, wid.z);
    let m0 = wid.x * TM;
    let n0 = wid.y * TN;
    let g = prepare(mode, f, m0 + lid % TM, n0 + lid % TN);
    let w = sid % WARPS;
    let wm = w / WN;
    let wn = w % WN;
    var acc: Acc;
    var next = stage_fetch(mode, f, g, lid, n0, f.k_begin);
    stage_put(mode, lid, 0u, next);
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = f.k_begin; k0 < f.k_end; k0 += TK) {
        let kn = k0 + TK;
        if (kn < f.k_end) {
            next = stage_fetch(mode, f, g, lid, n0, kn);
        }
        multiply_slice(mode, cur, wm, wn, &acc);
        // The next slice goes into the other tile, last read a slice ago (every thread passed
        // the barrier since), while slower subgroups may still read this one.
        cur = 1u - cur;
        if (kn < f.k_end) {
            stage_put(mode, lid, cur, next);
        }
        workgroupBarrier();
    }
    let o = Out(m0 + wm * FM * CS, n0 + wn * FN * CS, select(WARPS, sid, sid < WARPS), lane, lanes, sid < WARPS);
    drain_all(mode, f, o, acc);
}

@compute @workgroup_size(NT)
fn conv2d_fwd_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
) {
    coop_gemm(FWD, wid, lid, sid, lane, lanes);
}

@compute @workgroup_size(NT)
fn conv2d_bwd_data_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
) {
    coop_gemm(BWD_DATA, wid, lid, sid, lane, lanes);
}

@compute @workgroup_size(NT)
fn conv2d_bwd_weight_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
) {
    coop_gemm(BWD_WEIGHT, wid, lid, sid, lane, lanes);
}
