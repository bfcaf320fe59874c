// reduce2_tree.wgsl: batch norm's workgroup sum of two values per thread, by halving in workgroup
// memory (log2 WG barriers); runs on every adapter. Not a family of its own: engine/src/kernels.rs
// prepends it (or reduce2_subgroups.wgsl, its twin on subgroup operations) to batchnorm.wgsl,
// which declares red_a and red_b.

// What an entry point calling reduce2 receives: here, its local index alone.
struct ReduceIds {
    @builtin(local_invocation_index) t: u32,
}

// Sums red_a and red_b across the workgroup (each thread has written its own element); the sums
// are in element 0 when every thread returns. Call from uniform control flow.
fn reduce2(ids: ReduceIds) {
    let t = ids.t;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_a[t] += red_a[t + s];
            red_b[t] += red_b[t + s];
        }
        workgroupBarrier();
    }
}
