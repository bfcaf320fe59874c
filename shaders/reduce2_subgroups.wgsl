// reduce2_subgroups.wgsl: the twin of reduce2_tree.wgsl on subgroup operations: each subgroup
// sums its lanes in registers (subgroup_sum), its lane 0 writes the subgroup's sums, and
// thread 0 adds those in subgroup order: two barriers instead of log2 WG. Needs the adapter's
// SUBGROUP feature; the runtime uses it only where asked (see Runtime). Nothing here assumes a
// subgroup width: the butterfly runs log2 of the adapter's, and the slots are per subgroup.

struct ReduceIds {
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

// One slot per subgroup (at most WG of them, for a subgroup size of 1).
var<workgroup> subgroup_a: array<f32, WG>;
var<workgroup> subgroup_b: array<f32, WG>;

// The sum of v over the subgroup's lanes, the same bits in every lane, added in an order this
// code fixes: a butterfly, lane i adding lane i ^ d's partial for d = 1, 2, 4, ... (lanes i and
// i ^ d add the same two values, so they stay equal; subgroup sizes are powers of two on
// Vulkan, Metal and DX12). subgroupAdd would leave the order to the compiler, which may choose
// differently for each pipeline it compiles: the same kernel with and without zeroed workgroup
// memory could then round differently. Call from uniform control flow.
fn subgroup_sum(v0: f32, lanes: u32) -> f32 {
    var v = v0;
    for (var d = 1u; d < lanes; d <<= 1u) {
        v += subgroupShuffleXor(v, d);
    }
    return v;
}

// Sums red_a and red_b across the workgroup (each thread has written its own element, and reads
// only its own here); the sums are in element 0 when every thread returns. Call from uniform
// control flow: every lane of every subgroup takes part.
fn reduce2(ids: ReduceIds) {
    let a = subgroup_sum(red_a[ids.t], ids.lanes);
    let b = subgroup_sum(red_b[ids.t], ids.lanes);
    if (ids.lane == 0u) {
        subgroup_a[ids.subgroup] = a;
        subgroup_b[ids.subgroup] = b;
    }
    workgroupBarrier();
    if (ids.t == 0u) {
        var sa = 0.0;
        var sb = 0.0;
        for (var s = 0u; s < ids.subgroups; s++) {
            sa += subgroup_a[s];
            sb += subgroup_b[s];
        }
        red_a[0] = sa;
        red_b[0] = sb;
    }
    workgroupBarrier();
}
