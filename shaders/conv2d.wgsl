// 2-D convolution as an implicit GEMM over NHWC activations, with bias and optional ReLU.
// One dispatch computes a slice of the output channels, so that layers whose weights exceed a
// storage binding (fully connected layers run as convolutions) are split by channel.
//
//   C[m][n] = sum_k A[m][k] * B[k][n] + bias[n]
//   m: output pixel of this band (row-major over out_rows x out_w), n: output channel,
//   k = (ky * kw + kx) * in_c + c, so consecutive k read consecutive input channels.
//   A is never materialised: each tile load gathers it from the input (zero outside the image).
//
// A workgroup computes a BM x BN tile of C from BK-deep slices of A and B staged in workgroup
// memory; each of its 16 x 16 threads accumulates a TM x TN = 4 x 4 block in four vec4
// registers. The block's rows and columns are contiguous so that each step of the inner loop
// is one vec4 load of A (a broadcast within the row of threads), one vec4 load of B and four
// vec4 FMAs; accumulators are named variables, never a dynamically indexed array, which
// drivers may place in slow local memory.
//
// Split-K (k_chunk != 0): workgroup layer z sums only its chunk of K and writes the raw sums
// to `partial`; conv2d_splitk_reduce.wgsl then adds the layers up, with the epilogue. Layers
// whose M x N gives too few workgroups for the GPU (conv5 at small batches) fill it that way.

// ConvParams, the storage types, bindings 0-6 and store_output: include/conv2d_prelude.wgsl.

// Keep in step with the constants of the same names in src/gpu/kernels/conv/tile.rs (checked by a test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
// Threads per workgroup along x and y (the host checks these against its own constants).
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;
const THREADS: u32 = 256u;
// Row stride of a_tile in vec4s: BM / 4 plus one vec4 of padding, so that the gather's
// stores (16 consecutive k of one m per half-warp) fall in different banks.
const A_ROW: u32 = 17u;
const B_ROW: u32 = 16u;   // BN / 4

// Split-K only: each workgroup layer z's raw sums, [z][m][out_c] of this band and slice, which
// conv2d_splitk_reduce.wgsl adds up (with bias, ReLU and the flag) into the output.
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, 272>;  // [BK][A_ROW], vec4 = 4 consecutive m
var<workgroup> b_tile: array<vec4<f32>, 256>;  // [BK][B_ROW], vec4 = 4 consecutive n

// Split-K: stores this workgroup layer's raw sums for conv2d_splitk_reduce.wgsl; else the
// epilogue.
fn store(m: u32, n: u32, v: vec4<f32>, z: u32) {
    if (p.k_chunk == 0u) {
        store_output(m, n, v);
        return;
    }
    if (m >= p.out_rows * p.out_w) {
        return;
    }
    let base = (z * p.out_rows * p.out_w + m) * p.out_c + n;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.out_c) {
            partial[base + j] = v[j];
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

    // This thread gathers A elements (m = a_m + 16 j, k = a_k) for j < 4; the output pixels
    // do not change along K, so their coordinates are decoded once, here.
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
    let b_ok = n0 + b_n < p.out_c;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // This thread's k = k0 + a_k as (ky, kx, c), divided out once here and then advanced by
    // BK per slice with compares: integer division by a runtime value costs tens of
    // instructions on GPUs, four per slice against 256 FMAs.
    let kw_c = p.kw * p.in_c;
    // Split-K: workgroup layer z sums k in [k_begin, k_end) only.
    let k_begin = wid.z * p.k_chunk;
    let k_end = select(p.k_total, min(k_begin + p.k_chunk, p.k_total), p.k_chunk != 0u);
    var ky = i32((k_begin + a_k) / kw_c);
    var kx = i32(((k_begin + a_k) % kw_c) / p.in_c);
    var c = (k_begin + a_k) % p.in_c;
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // Gather the A slice.
        let k = k0 + a_k;
        let k_ok = k < k_end;
        for (var j = 0u; j < 4u; j++) {
            let iy = a_iy0[j] + ky;
            let ix = a_ix0[j] + kx;
            var v = 0.0;
            if (a_ok[j] && k_ok && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
                v = f32(input[u32((a_row[j] + iy) * i32(p.in_w) + ix) * p.in_c + c + p.in_base]);
            }
            let m = a_m + 16u * j;
            a_tile[a_k * A_ROW + m / 4u][m % 4u] = v;
        }
        advance_k(BK, &ky, &kx, &c);
        // Load the B slice.
        for (var j = 0u; j < 4u; j++) {
            let kk = k0 + b_k + 4u * j;
            var v = 0.0;
            if (kk < k_end && b_ok) {
                v = f32(weights[kk * p.out_c + n0 + b_n]);
            }
            b_tile[(b_k + 4u * j) * B_ROW + b_n / 4u][b_n % 4u] = v;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            let a = a_tile[kk * A_ROW + lid.y];
            let b = b_tile[kk * B_ROW + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }

    let m = m0 + lid.y * TM;
    let n = n0 + lid.x * TN;
    store(m, n, acc0, wid.z);
    store(m + 1u, n, acc1, wid.z);
    store(m + 2u, n, acc2, wid.z);
    store(m + 3u, n, acc3, wid.z);
}
