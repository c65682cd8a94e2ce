// Split-K's second pass (see conv2d.wgsl): where a convolution gives too few workgroups to
// fill the GPU (conv5 at small batches), its K is split over workgroup layers that each write
// raw sums; this adds them up for every output, adds the bias and the residual (if any),
// applies ReLU, flags overflow
// and stores, as conv2d.wgsl's epilogue does. One invocation per output, consecutive
// invocations along the channels.

// Keep in step with `ReduceParams` in src/gpu/kernels/conv/mod.rs (checked by a test).
struct ReduceParams {
    count: u32,      // outputs of this band and slice: out_rows * out_w * out_c
    out_c: u32,      // channels of the slice
    out_w: u32,
    out_h: u32,
    out_row0: u32,   // first output flat row of the band
    out_base: u32,   // element index of output flat row out_row0 within the output binding
    out_stride: u32, // channels per output pixel
    out_c0: u32,     // first output channel of the slice
    splits: u32,     // workgroup layers whose sums are added
    relu: u32,
    residual: u32,   // 1: add the residual binding (laid out as the output, f32) before ReLU
    res_base: u32,   // element index of output flat row out_row0 within the residual binding
}

// The output's storage type (rewritten by the host) and range (a pipeline constant), as in
// conv2d.wgsl.
alias out_t = f32;
override ACT_LIMIT: f32 = 3.40282347e38;

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> partial: array<f32>;   // [splits][count]
@group(0) @binding(2) var<storage, read> bias: array<f32>;      // [out_c] of the slice
@group(0) @binding(3) var<storage, read_write> output: array<out_t>;
@group(0) @binding(4) var<storage, read_write> overflow: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + li;
    if (e >= p.count) {
        return;
    }
    let m = e / p.out_c;
    let n = e % p.out_c;
    var r = bias[n];
    for (var z = 0u; z < p.splits; z++) {
        r += partial[z * p.count + e];
    }
    if (p.residual != 0u) {
        r += residual[p.res_base + m * p.out_stride + p.out_c0 + n];
    }
    if (p.relu != 0u) {
        r = max(r, 0.0);
    }
    if (abs(r) > ACT_LIMIT) {
        let img = (p.out_row0 + m / p.out_w) / p.out_h;
        atomicOr(&overflow[min(img, arrayLength(&overflow) - 1u)], 1u);
    }
    output[p.out_base + m * p.out_stride + p.out_c0 + n] = out_t(r);
}
