// 2-D convolution for layers whose whole K (kh * kw * in_c) fits one 32-deep stage, such as
// the first layer of VGG (3 x 3 x 3 = 27 over RGB): the GEMM, the parameters and the output of
// conv2d.wgsl (read that file first), but the tile's A and B are gathered for all of K at
// once, one barrier, and each thread's 4 x 4 block is summed over exactly k_total steps
// instead of 16-deep slices padded with zeros. The host uses it only where k_total <= K_MAX
// (src/gpu/conv.rs, ConvTile::Whole).

// Keep in step with `ConvParams` in src/gpu/conv.rs (checked by a test).
struct ConvParams {
    in_h: u32,
    in_w: u32,
    in_c: u32,
    in_base: u32,   // element index of input flat row in_row0 within the input binding
    out_h: u32,
    out_w: u32,
    out_c: u32,
    out_base: u32,  // element index of output flat row out_row0 within the output binding
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    k_total: u32,
    relu: u32,
    out_row0: u32,  // first output flat row (n * out_h + oy) of this band
    out_rows: u32,
    in_row0: u32,   // first input flat row (n * in_h + y) present in the input binding
    out_stride: u32, // channels per output pixel; out_c is this dispatch's slice of them
    out_c0: u32,    // first output channel of the slice
    k_chunk: u32,   // split-K (conv2d.wgsl only; 0 here)
    _pad1: u32,
    _pad2: u32,
}

// Storage types of the input, output and weights, and the largest magnitude an activation may
// take. These four lines are the f32 kernel; the host compiles the f16-storage variants by
// rewriting them (src/gpu/conv.rs, ConvTypes): the sums stay f32 either way.
alias in_t = f32;
alias out_t = f32;
alias w_t = f32;
const ACT_LIMIT: f32 = 3.40282347e38;

// Keep in step with the constants of the same names in src/gpu/conv.rs (checked by a test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const K_MAX: u32 = 32u;
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const THREADS: u32 = 256u;
// Row stride of a_tile in vec4s: BM / 4 plus one of padding (see conv2d.wgsl).
const A_ROW: u32 = 17u;
const B_ROW: u32 = 16u;   // BN / 4

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<in_t>;
@group(0) @binding(2) var<storage, read> weights: array<w_t>;   // [k_total][out_c] of the slice
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // [out_c] of the slice
@group(0) @binding(4) var<storage, read_write> output: array<out_t>;
// Per image, non-zero once one of its outputs exceeded ACT_LIMIT (see conv2d.wgsl).
@group(0) @binding(5) var<storage, read_write> overflow: array<atomic<u32>>;

var<workgroup> a_tile: array<vec4<f32>, 544>;  // [K_MAX][A_ROW], vec4 = 4 consecutive m
var<workgroup> b_tile: array<vec4<f32>, 512>;  // [K_MAX][B_ROW], vec4 = 4 consecutive n

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

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m_total = p.out_rows * p.out_w;
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;

    // A: this thread gathers k = a_k of pixels a_m + 8 j (j < 8); its (ky, kx, c) is
    // decoded once, as K is not walked.
    let a_k = li % K_MAX;
    let a_m = li / K_MAX;
    let kw_c = p.kw * p.in_c;
    let ky = i32(a_k / kw_c);
    let kx = i32((a_k % kw_c) / p.in_c);
    let c = a_k % p.in_c;
    let k_ok = a_k < p.k_total;
    for (var j = 0u; j < 8u; j++) {
        let mm = a_m + 8u * j;
        let m = m0 + mm;
        let q = p.out_row0 + m / p.out_w;
        let ox = m % p.out_w;
        let img = q / p.out_h;
        let oy = q % p.out_h;
        let iy = i32(oy * p.stride_h) - i32(p.pad_h) + ky;
        let ix = i32(ox * p.stride_w) - i32(p.pad_w) + kx;
        var v = 0.0;
        if (m < m_total && k_ok && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
            let row = i32(img * p.in_h) - i32(p.in_row0);
            v = f32(input[u32((row + iy) * i32(p.in_w) + ix) * p.in_c + c + p.in_base]);
        }
        a_tile[a_k * A_ROW + mm / 4u][mm % 4u] = v;
    }
    // B: this thread loads k = b_k + 4 j (j < 8) of channel n0 + b_n: coalesced along n.
    let b_n = li % BN;
    let b_k = li / BN;
    let b_ok = n0 + b_n < p.out_c;
    for (var j = 0u; j < 8u; j++) {
        let kk = b_k + 4u * j;
        var v = 0.0;
        if (kk < p.k_total && b_ok) {
            v = f32(weights[kk * p.out_c + n0 + b_n]);
        }
        b_tile[kk * B_ROW + b_n / 4u][b_n % 4u] = v;
    }
    workgroupBarrier();

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k_total; kk++) {
        let a = a_tile[kk * A_ROW + lid.y];
        let b = b_tile[kk * B_ROW + lid.x];
        acc0 = fma(vec4<f32>(a.x), b, acc0);
        acc1 = fma(vec4<f32>(a.y), b, acc1);
        acc2 = fma(vec4<f32>(a.z), b, acc2);
        acc3 = fma(vec4<f32>(a.w), b, acc3);
    }

    let m = m0 + lid.y * 4u;
    let n = n0 + lid.x * 4u;
    store_output(m, n, acc0);
    store_output(m + 1u, n, acc1);
    store_output(m + 2u, n, acc2);
    store_output(m + 3u, n, acc3);
}
