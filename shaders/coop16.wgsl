// coop16.wgsl: the 16x16x16 cooperative matrices (tensor cores) of the tensor-core GEMMs
// (conv2d_coop.wgsl): f16 operands A (M x K) and B (K x N), f32 accumulators C (M x N); the
// configuration NVIDIA's tensor cores list. coop8.wgsl is the 8x8x8 twin. Not a family of its
// own: engine/src/kernels.rs puts this text first in the tensor-core family of its size, as the
// enable directives must precede every declaration.
enable f16;
enable wgpu_cooperative_matrix;

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
// The side of every matrix above (M = N = K).
const CS: u32 = 16u;
