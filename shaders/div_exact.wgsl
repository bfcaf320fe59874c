// div_exact.wgsl: integer division by a reciprocal. Not a family of its own: WGSL has no
// include, so engine/src/kernels.rs prepends this text to conv2d and batchnorm, whose inner
// loops and element-wise passes split flat indices without a ~20-instruction integer division.

// a / d for a < 2^24 and d >= 1, given inv = 1 / d. The float quotient is within one of the
// true one (relative error under 2^-23 on a quotient under 2^23), so one correction each way
// makes it exact: two multiplies and two compares instead of a ~20-instruction division.
fn div_exact(a: u32, d: u32, inv: f32) -> u32 {
    var q = u32(f32(a) * inv);
    if (q * d > a) {
        q -= 1u;
    }
    if ((q + 1u) * d <= a) {
        q += 1u;
    }
    return q;
}
