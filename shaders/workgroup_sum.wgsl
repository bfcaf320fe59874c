// workgroup_sum.wgsl: the one-workgroup sum of the loss kernels. Not a family of its own: WGSL
// has no include, so engine/src/kernels.rs prepends this text to cross_entropy, dlr_loss,
// kl_div and margin_loss, whose forward entry points run one workgroup of RED threads.

const RED: u32 = 256u;

var<workgroup> partial: array<f32, RED>;

// The sum over the workgroup of every thread's `acc` (thread t is local index t), by halving in
// workgroup memory; every thread gets it. Call from uniform control flow.
fn workgroup_sum(t: u32, acc: f32) -> f32 {
    partial[t] = acc;
    workgroupBarrier();
    for (var s = RED / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

