// What conv2d.wgsl, conv2d_large.wgsl and conv2d_whole_k.wgsl share besides the parameters
// (conv2d_params.wgsl), put in front of each by the host (src/gpu/runtime/shaders.rs): the
// storage types, the bindings and the epilogue that adds the bias, applies ReLU, flags
// overflow and stores a row of 4 outputs.

// Storage types of the input, output and weights, and the largest magnitude an activation may
// take. These lines are the f32 kernel; the host compiles the f16-storage variants by
// rewriting the three aliases and setting ACT_LIMIT to f16's 65504 as a pipeline constant
// (src/gpu/kernels/conv/types.rs, ConvTypes): the sums stay f32 either way.
alias in_t = f32;
alias out_t = f32;
alias w_t = f32;
override ACT_LIMIT: f32 = 3.40282347e38;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<in_t>;
@group(0) @binding(2) var<storage, read> weights: array<w_t>;   // [k_total][out_c] of the slice
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // [out_c] of the slice
@group(0) @binding(4) var<storage, read_write> output: array<out_t>;
// Per image of the batch, non-zero once one of its outputs exceeded ACT_LIMIT (f16's 65504 in
// the f16 variants): such an image's features are reported as failed, never silently infinite.
@group(0) @binding(5) var<storage, read_write> overflow: array<atomic<u32>>;
// A residual block's shortcut, f32 and laid out as the output (read when p.residual != 0).
@group(0) @binding(6) var<storage, read> residual: array<f32>;

// Stores v + bias (+ the residual, if any; after ReLU if asked) at output pixel m, channels
// n .. n + 3 of the slice.
fn store_output(m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.out_rows * p.out_w) {
        return;
    }
    var r = v + vec4<f32>(
        bias[min(n, p.out_c - 1u)],
        bias[min(n + 1u, p.out_c - 1u)],
        bias[min(n + 2u, p.out_c - 1u)],
        bias[min(n + 3u, p.out_c - 1u)],
    );
    if (p.residual != 0u) {
        let s = p.res_base + m * p.out_stride + p.out_c0 + n;
        for (var j = 0u; j < 4u; j++) {
            if (n + j < p.out_c) {
                r[j] += residual[s + j];
            }
        }
    }
    if (p.relu != 0u) {
        r = max(r, vec4<f32>(0.0));
    }
    if (any(abs(r) > vec4<f32>(ACT_LIMIT))) {
        let img = (p.out_row0 + m / p.out_w) / p.out_h;
        atomicOr(&overflow[min(img, arrayLength(&overflow) - 1u)], 1u);
    }
    let base = p.out_base + m * p.out_stride + p.out_c0 + n;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.out_c) {
            output[base + j] = out_t(r[j]);
        }
    }
}

// Advances this thread's k, kept as (ky, kx, c), by `step`: at most ceil(step / in_c)
// compares (one where in_c >= step). Integer division by a runtime value costs tens of
// instructions on GPUs, so k is divided out once and then walked.
fn advance_k(step: u32, ky: ptr<function, i32>, kx: ptr<function, i32>, c: ptr<function, u32>) {
    *c += step;
    while (*c >= p.in_c) {
        *c -= p.in_c;
        *kx += 1;
        if (*kx == i32(p.kw)) {
            *kx = 0;
            *ky += 1;
        }
    }
}
