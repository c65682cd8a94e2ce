// 2-D convolution as an implicit GEMM over NHWC activations, with bias and optional ReLU.
//
//   C[m][n] = sum_k A[m][k] * B[k][n] + bias[n]
//   m: output pixel of this band (row-major over out_rows x out_w), n: output channel,
//   k = (ky * kw + kx) * in_c + c, so consecutive k read consecutive input channels.
//   A is never materialised: each tile load gathers it from the input (zero outside the image).
//
// A workgroup computes a BM x BN tile of C from BK-deep slices of A and B staged in workgroup
// memory; each of its 16 x 16 threads accumulates a TM x TN block in registers.
// Rows of the block are strided by 16 so that a warp's reads of b_tile hit distinct banks and
// its reads of a_tile are broadcasts.

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
    _pad: u32,
}

// Keep in step with the constants of the same names in src/gpu/conv.rs (checked by a test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;
const THREADS: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;   // [k_total][out_c]
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // [out_c]
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

var<workgroup> a_tile: array<f32, 1024>;  // [BK][BM]
var<workgroup> b_tile: array<f32, 1024>;  // [BK][BN]

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m_total = p.out_rows * p.out_w;
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;

    // This thread loads A elements (m = a_m + 16 j, k = a_k) for j < 4; the output pixels do
    // not change along K, so their coordinates are decoded once, here.
    let a_k = li % BK;
    let a_m = li / BK;
    var a_iy0: array<i32, 4>;
    var a_ix0: array<i32, 4>;
    var a_row: array<i32, 4>;   // input flat row of this image's row 0, relative to in_row0
    var a_ok: array<bool, 4>;
    for (var j = 0u; j < 4u; j++) {
        let m = m0 + a_m + 16u * j;
        a_ok[j] = m < m_total;
        let q = p.out_row0 + m / p.out_w;
        let ox = m % p.out_w;
        let img = q / p.out_h;
        let oy = q % p.out_h;
        a_iy0[j] = i32(oy * p.stride_h) - i32(p.pad_h);
        a_ix0[j] = i32(ox * p.stride_w) - i32(p.pad_w);
        a_row[j] = i32(img * p.in_h) - i32(p.in_row0);
    }
    // This thread loads B elements (k = b_k + 4 j, n = b_n) for j < 4: coalesced along n.
    let b_n = li % BN;
    let b_k = li / BN;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            acc[i][j] = 0.0;
        }
    }

    let kw_c = p.kw * p.in_c;
    for (var k0 = 0u; k0 < p.k_total; k0 += BK) {
        // Gather the A slice.
        let k = k0 + a_k;
        let ky = i32(k / kw_c);
        let rem = k % kw_c;
        let kx = i32(rem / p.in_c);
        let c = rem % p.in_c;
        for (var j = 0u; j < 4u; j++) {
            let iy = a_iy0[j] + ky;
            let ix = a_ix0[j] + kx;
            var v = 0.0;
            if (a_ok[j] && k < p.k_total && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
                let idx = u32((a_row[j] + iy) * i32(p.in_w) + ix) * p.in_c + c + p.in_base;
                v = input[idx];
            }
            a_tile[a_k * BM + a_m + 16u * j] = v;
        }
        // Load the B slice.
        for (var j = 0u; j < 4u; j++) {
            let kk = k0 + b_k + 4u * j;
            let n = n0 + b_n;
            var v = 0.0;
            if (kk < p.k_total && n < p.out_c) {
                v = weights[kk * p.out_c + n];
            }
            b_tile[(b_k + 4u * j) * BN + b_n] = v;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < TM; i++) {
                a[i] = a_tile[kk * BM + lid.y + 16u * i];
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = b_tile[kk * BN + lid.x + 16u * j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let m = m0 + lid.y + 16u * i;
        if (m >= m_total) {
            continue;
        }
        for (var j = 0u; j < TN; j++) {
            let n = n0 + lid.x + 16u * j;
            if (n < p.out_c) {
                var v = acc[i][j] + bias[n];
                if (p.relu != 0u) {
                    v = max(v, 0.0);
                }
                output[p.out_base + m * p.out_c + n] = v;
            }
        }
    }
}
