// reduce2_subgroups.wgsl: the twin of reduce2_tree.wgsl on subgroup operations: each subgroup
// sums its lanes in registers (subgroupAdd), its lane 0 writes the subgroup's sums,
// and thread 0 adds those in subgroup order: two barriers instead of log2 WG. Needs the
// adapter's SUBGROUP feature; the runtime uses it only where asked (see Runtime).

struct ReduceIds {
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
}

// One slot per subgroup (at most WG of them, for a subgroup size of 1).
var<workgroup> subgroup_a: array<f32, WG>;
var<workgroup> subgroup_b: array<f32, WG>;

// Sums red_a and red_b across the workgroup (each thread has written its own element, and reads
// only its own here); the sums are in element 0 when every thread returns. Call from uniform
// control flow: every lane of every subgroup takes part.
fn reduce2(ids: ReduceIds) {
    let a = subgroupAdd(red_a[ids.t]);
    let b = subgroupAdd(red_b[ids.t]);
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
