// 2-D convolution as an implicit GEMM, the large-tile variant of conv2d.wgsl (read that file
// first: the GEMM, the parameters and the output are the same). A workgroup of 16 x 16
// threads computes a 128 x 128 tile of C from 8-deep slices, each thread an 8 x 8 block held
// in sixteen named vec4 accumulators: per slice and thread, 4 gathers of A, 4 loads of B and
// 512 FMAs, against 4, 4 and 256 in the 64 x 64 kernel, so the large layers of VGG (conv2_x
// to conv4_x, where M and N give enough workgroups) spend more of their time in FMAs. The
// host picks this kernel per layer (src/gpu/kernels/conv/tile.rs, ConvTile).

// ConvParams, the storage types, bindings 0-6 and store_output: include/conv2d_prelude.wgsl.

// Keep in step with the constants of the same names in src/gpu/kernels/conv/tile.rs (checked by a test).
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const TM: u32 = 8u;
const TN: u32 = 8u;
const THREADS: u32 = 256u;
// Row stride of a_tile in vec4s: BM / 4 plus one of padding (see conv2d.wgsl).
const A_ROW: u32 = 33u;
const B_ROW: u32 = 32u;   // BN / 4
const A_STAGE: u32 = 264u;  // BK * A_ROW: one slice of a_tile
const B_STAGE: u32 = 256u;  // BK * B_ROW
// Slices staged at once. 1: load a slice, barrier, multiply, barrier. 2 (the host's
// "large2" variant sets it as a pipeline constant): the next slice's global loads are issued
// into registers before this one is multiplied, then stored into the other half of the tiles,
// with one barrier a slice.
override STAGES: u32 = 1u;

var<workgroup> a_tile: array<vec4<f32>, 528>;  // [2][BK][A_ROW], vec4 = 4 consecutive m
var<workgroup> b_tile: array<vec4<f32>, 512>;  // [2][BK][B_ROW], vec4 = 4 consecutive n

// This thread's 4 gathered A values of slice k (pixels a_m + 32 j) or 0 where out of range.
fn gather_a(k_ok: bool, ky: i32, kx: i32, c: u32, iy0: array<i32, 4>, ix0: array<i32, 4>,
            row: array<i32, 4>, ok: array<bool, 4>) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let iy = iy0[j] + ky;
        let ix = ix0[j] + kx;
        if (ok[j] && k_ok && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
            v[j] = f32(input[u32((row[j] + iy) * i32(p.in_w) + ix) * p.in_c + c + p.in_base]);
        }
    }
    return v;
}

// This thread's 4 B values of the slice at k0 (k = k0 + b_k + 2 j, n = n0 + b_n).
fn load_b(k0: u32, b_k: u32, b_n: u32, n0: u32, b_ok: bool) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        let kk = k0 + b_k + 2u * j;
        if (kk < p.k_total && b_ok) {
            v[j] = f32(weights[kk * p.out_c + n0 + b_n]);
        }
    }
    return v;
}

// Stores gathered values into stage `s` of the tiles.
fn stage_tiles(s: u32, a: vec4<f32>, a_k: u32, a_m: u32, b: vec4<f32>, b_k: u32, b_n: u32) {
    for (var j = 0u; j < 4u; j++) {
        let m = a_m + 32u * j;
        a_tile[s * A_STAGE + a_k * A_ROW + m / 4u][m % 4u] = a[j];
        b_tile[s * B_STAGE + (b_k + 2u * j) * B_ROW + b_n / 4u][b_n % 4u] = b[j];
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

    // This thread gathers A elements (m = a_m + 32 j, k = a_k) for j < 4.
    let a_k = li % BK;
    let a_m = li / BK;
    var a_iy0: array<i32, 4>;
    var a_ix0: array<i32, 4>;
    var a_row: array<i32, 4>;
    var a_ok: array<bool, 4>;
    for (var j = 0u; j < 4u; j++) {
        let m = m0 + a_m + 32u * j;
        a_ok[j] = m < m_total;
        let q = p.out_row0 + m / p.out_w;
        let ox = m % p.out_w;
        let img = q / p.out_h;
        let oy = q % p.out_h;
        a_iy0[j] = i32(oy * p.stride_h) - i32(p.pad_h);
        a_ix0[j] = i32(ox * p.stride_w) - i32(p.pad_w);
        a_row[j] = i32(img * p.in_h) - i32(p.in_row0);
    }
    // This thread loads B elements (k = b_k + 2 j, n = b_n) for j < 4: coalesced along n.
    let b_n = li % BN;
    let b_k = li / BN;
    let b_ok = n0 + b_n < p.out_c;

    var acc00 = vec4<f32>(0.0);
    var acc01 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);
    var acc40 = vec4<f32>(0.0);
    var acc41 = vec4<f32>(0.0);
    var acc50 = vec4<f32>(0.0);
    var acc51 = vec4<f32>(0.0);
    var acc60 = vec4<f32>(0.0);
    var acc61 = vec4<f32>(0.0);
    var acc70 = vec4<f32>(0.0);
    var acc71 = vec4<f32>(0.0);

    // k = k0 + a_k as (ky, kx, c), advanced by compares (see conv2d.wgsl) after each gather.
    let kw_c = p.kw * p.in_c;
    var ky = i32(a_k / kw_c);
    var kx = i32((a_k % kw_c) / p.in_c);
    var c = a_k % p.in_c;
    if (STAGES == 2u) {
        let a = gather_a(a_k < p.k_total, ky, kx, c, a_iy0, a_ix0, a_row, a_ok);
        stage_tiles(0u, a, a_k, a_m, load_b(0u, b_k, b_n, n0, b_ok), b_k, b_n);
        advance_k(BK, &ky, &kx, &c);
        workgroupBarrier();
    }
    for (var k0 = 0u; k0 < p.k_total; k0 += BK) {
        // With one stage, this slice is loaded now; with two, it was staged by the previous
        // step and the next one's loads are issued before the multiplication.
        let s = select(0u, (k0 / BK) % 2u, STAGES == 2u);
        let next = select(k0, k0 + BK, STAGES == 2u);
        let loading = next < p.k_total;
        var a = vec4<f32>(0.0);
        var b = vec4<f32>(0.0);
        if (loading) {
            a = gather_a(next + a_k < p.k_total, ky, kx, c, a_iy0, a_ix0, a_row, a_ok);
            b = load_b(next, b_k, b_n, n0, b_ok);
            advance_k(BK, &ky, &kx, &c);
        }
        if (STAGES == 1u) {
            stage_tiles(0u, a, a_k, a_m, b, b_k, b_n);
            workgroupBarrier();
        }

        for (var kk = 0u; kk < BK; kk++) {
            let a0 = a_tile[s * A_STAGE + kk * A_ROW + 2u * lid.y];
            let a1 = a_tile[s * A_STAGE + kk * A_ROW + 2u * lid.y + 1u];
            let b0 = b_tile[s * B_STAGE + kk * B_ROW + 2u * lid.x];
            let b1 = b_tile[s * B_STAGE + kk * B_ROW + 2u * lid.x + 1u];
            acc00 = fma(vec4<f32>(a0.x), b0, acc00);
            acc01 = fma(vec4<f32>(a0.x), b1, acc01);
            acc10 = fma(vec4<f32>(a0.y), b0, acc10);
            acc11 = fma(vec4<f32>(a0.y), b1, acc11);
            acc20 = fma(vec4<f32>(a0.z), b0, acc20);
            acc21 = fma(vec4<f32>(a0.z), b1, acc21);
            acc30 = fma(vec4<f32>(a0.w), b0, acc30);
            acc31 = fma(vec4<f32>(a0.w), b1, acc31);
            acc40 = fma(vec4<f32>(a1.x), b0, acc40);
            acc41 = fma(vec4<f32>(a1.x), b1, acc41);
            acc50 = fma(vec4<f32>(a1.y), b0, acc50);
            acc51 = fma(vec4<f32>(a1.y), b1, acc51);
            acc60 = fma(vec4<f32>(a1.z), b0, acc60);
            acc61 = fma(vec4<f32>(a1.z), b1, acc61);
            acc70 = fma(vec4<f32>(a1.w), b0, acc70);
            acc71 = fma(vec4<f32>(a1.w), b1, acc71);
        }
        if (STAGES == 2u && loading) {
            stage_tiles(1u - s, a, a_k, a_m, b, b_k, b_n);
        }
        workgroupBarrier();
    }

    let m = m0 + lid.y * TM;
    let n = n0 + lid.x * TN;
    store_output(m + 0u, n, acc00);
    store_output(m + 0u, n + 4u, acc01);
    store_output(m + 1u, n, acc10);
    store_output(m + 1u, n + 4u, acc11);
    store_output(m + 2u, n, acc20);
    store_output(m + 2u, n + 4u, acc21);
    store_output(m + 3u, n, acc30);
    store_output(m + 3u, n + 4u, acc31);
    store_output(m + 4u, n, acc40);
    store_output(m + 4u, n + 4u, acc41);
    store_output(m + 5u, n, acc50);
    store_output(m + 5u, n + 4u, acc51);
    store_output(m + 6u, n, acc60);
    store_output(m + 6u, n + 4u, acc61);
    store_output(m + 7u, n, acc70);
    store_output(m + 7u, n + 4u, acc71);
}
