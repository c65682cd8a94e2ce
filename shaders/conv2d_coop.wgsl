// 2-D convolution as an implicit GEMM on cooperative matrices (tensor cores): the GEMM, the
// parameters and the output of conv2d.wgsl (read that file first), with f16 operands and f32
// sums. One workgroup is one subgroup of 32 invocations (the host uses this kernel only where
// subgroups are exactly 32 wide and the adapter lists the 16x16x16 f16 x f16 -> f32
// configuration) and computes a 64 x 64 tile of C as 4 x 4 accumulators of 16 x 16, from
// 16-deep slices of A (gathered from the input) and B (the f16 weights) staged in workgroup
// memory. Cooperative operations sit in uniform control flow; the epilogue (bias, ReLU, the
// overflow flag, the store) goes through workgroup memory, one accumulator at a time, since
// a cooperative matrix has no per-element access. Per-element results are held to the CPU
// reference on a GPU at run time before this kernel is used (src/gpu/kernels/conv/coop_check.rs).
// The host puts coop_enables.wgsl and conv2d_params.wgsl (ConvParams) in front of this file.

// Storage types of the input and output (the host rewrites these lines, as for conv2d.wgsl);
// the weights are always f16 here, and so every output must fit f16's range.
alias in_t = f32;
alias out_t = f32;
const ACT_LIMIT: f32 = 65504.0;

// Keep in step with the COOP_* constants in src/gpu/kernels/conv/tile.rs (checked by a test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const WG: u32 = 32u;

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<in_t>;
@group(0) @binding(2) var<storage, read> weights: array<f16>;   // [k_total][out_c] of the slice
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // [out_c] of the slice
@group(0) @binding(4) var<storage, read_write> output: array<out_t>;
// Set to 1 by a plain store, not an atomic: naga 30 declares the Vulkan memory model for
// cooperative matrices, and its device-scope atomics then lack the capability SPIR-V requires
// (spirv-val rejects them). Every writer stores the same 1 and it is read after the dispatch.
@group(0) @binding(5) var<storage, read_write> overflow: array<u32>;
// A residual block's shortcut, f32 and laid out as the output (read when p.residual != 0).
@group(0) @binding(6) var<storage, read> residual: array<f32>;

var<workgroup> a_tile: array<f16, 1024>;       // [BM][BK] row-major: four 16 x 16 A blocks
var<workgroup> b_tile: array<f16, 1024>;       // [BK][BN] row-major: four 16 x 16 B blocks
var<workgroup> stage: array<f32, 256>;         // one 16 x 16 accumulator, row-major
// Per output pixel of the tile: first input row and column of its window, its image's first
// input flat row relative to in_row0, and 1 if the pixel exists (decoded once per workgroup).
var<workgroup> pixel: array<vec4<i32>, 64>;

// Adds bias and the residual (if any), applies ReLU, flags overflow and stores the 16 x 16
// block at (m, n) of C.
fn store_tile(acc: coop_mat16x16<f32, C>, m: u32, n: u32, li: u32) {
    let s0 = 0u;
    coopStoreT(acc, &stage[s0], 16u);
    workgroupBarrier();
    for (var t = 0u; t < 8u; t++) {
        let e = li + WG * t;
        let mm = m + e / 16u;
        let nn = n + e % 16u;
        if (mm < p.out_rows * p.out_w && nn < p.out_c) {
            var r = stage[e] + bias[nn];
            if (p.residual != 0u) {
                r += residual[p.res_base + mm * p.out_stride + p.out_c0 + nn];
            }
            if (p.relu != 0u) {
                r = max(r, 0.0);
            }
            if (abs(r) > ACT_LIMIT) {
                let img = (p.out_row0 + mm / p.out_w) / p.out_h;
                overflow[min(img, arrayLength(&overflow) - 1u)] = 1u;
            }
            output[p.out_base + mm * p.out_stride + p.out_c0 + nn] = out_t(r);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let m_total = p.out_rows * p.out_w;
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;
    for (var j = li; j < BM; j += WG) {
        let m = m0 + j;
        let q = p.out_row0 + m / p.out_w;
        let ox = m % p.out_w;
        let img = q / p.out_h;
        let oy = q % p.out_h;
        pixel[j] = vec4<i32>(
            i32(oy * p.stride_h) - i32(p.pad_h),
            i32(ox * p.stride_w) - i32(p.pad_w),
            i32(img * p.in_h) - i32(p.in_row0),
            select(0, 1, m < m_total),
        );
    }

    var acc00 = coop_mat16x16<f32, C>();
    var acc01 = coop_mat16x16<f32, C>();
    var acc02 = coop_mat16x16<f32, C>();
    var acc03 = coop_mat16x16<f32, C>();
    var acc10 = coop_mat16x16<f32, C>();
    var acc11 = coop_mat16x16<f32, C>();
    var acc12 = coop_mat16x16<f32, C>();
    var acc13 = coop_mat16x16<f32, C>();
    var acc20 = coop_mat16x16<f32, C>();
    var acc21 = coop_mat16x16<f32, C>();
    var acc22 = coop_mat16x16<f32, C>();
    var acc23 = coop_mat16x16<f32, C>();
    var acc30 = coop_mat16x16<f32, C>();
    var acc31 = coop_mat16x16<f32, C>();
    var acc32 = coop_mat16x16<f32, C>();
    var acc33 = coop_mat16x16<f32, C>();

    // This invocation gathers k = k0 + a_k of pixels a_m + 2 j; its (ky, kx, c) is divided
    // out once and advanced by compares, as in conv2d.wgsl.
    let a_k = li % BK;
    let a_m = li / BK;
    let kw_c = p.kw * p.in_c;
    var ky = i32(a_k / kw_c);
    var kx = i32((a_k % kw_c) / p.in_c);
    var c = a_k % p.in_c;
    workgroupBarrier();
    for (var k0 = 0u; k0 < p.k_total; k0 += BK) {
        let k_ok = k0 + a_k < p.k_total;
        for (var j = 0u; j < BM / 2u; j++) {
            let m = a_m + 2u * j;
            let px = pixel[m];
            let iy = px.x + ky;
            let ix = px.y + kx;
            var v = f16(0.0);
            if (px.w != 0 && k_ok && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w)) {
                v = f16(input[u32((px.z + iy) * i32(p.in_w) + ix) * p.in_c + c + p.in_base]);
            }
            a_tile[m * BK + a_k] = v;
        }
        c += BK;
        while (c >= p.in_c) {
            c -= p.in_c;
            kx += 1;
            if (kx == i32(p.kw)) {
                kx = 0;
                ky += 1;
            }
        }
        for (var j = 0u; j < BK * BN / WG; j++) {
            let e = li + WG * j;
            let kk = k0 + e / BN;
            let nn = n0 + e % BN;
            var v = f16(0.0);
            if (kk < p.k_total && nn < p.out_c) {
                v = weights[kk * p.out_c + nn];
            }
            b_tile[e] = v;
        }
        workgroupBarrier();
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[0], BK);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[256], BK);
        let a2 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[512], BK);
        let a3 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[768], BK);
        let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[0], BN);
        let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[16], BN);
        let b2 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[32], BN);
        let b3 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[48], BN);
        acc00 = coopMultiplyAdd(a0, b0, acc00);
        acc01 = coopMultiplyAdd(a0, b1, acc01);
        acc02 = coopMultiplyAdd(a0, b2, acc02);
        acc03 = coopMultiplyAdd(a0, b3, acc03);
        acc10 = coopMultiplyAdd(a1, b0, acc10);
        acc11 = coopMultiplyAdd(a1, b1, acc11);
        acc12 = coopMultiplyAdd(a1, b2, acc12);
        acc13 = coopMultiplyAdd(a1, b3, acc13);
        acc20 = coopMultiplyAdd(a2, b0, acc20);
        acc21 = coopMultiplyAdd(a2, b1, acc21);
        acc22 = coopMultiplyAdd(a2, b2, acc22);
        acc23 = coopMultiplyAdd(a2, b3, acc23);
        acc30 = coopMultiplyAdd(a3, b0, acc30);
        acc31 = coopMultiplyAdd(a3, b1, acc31);
        acc32 = coopMultiplyAdd(a3, b2, acc32);
        acc33 = coopMultiplyAdd(a3, b3, acc33);
        workgroupBarrier();
    }

    store_tile(acc00, m0 + 0u, n0 + 0u, li);
    store_tile(acc01, m0 + 0u, n0 + 16u, li);
    store_tile(acc02, m0 + 0u, n0 + 32u, li);
    store_tile(acc03, m0 + 0u, n0 + 48u, li);
    store_tile(acc10, m0 + 16u, n0 + 0u, li);
    store_tile(acc11, m0 + 16u, n0 + 16u, li);
    store_tile(acc12, m0 + 16u, n0 + 32u, li);
    store_tile(acc13, m0 + 16u, n0 + 48u, li);
    store_tile(acc20, m0 + 32u, n0 + 0u, li);
    store_tile(acc21, m0 + 32u, n0 + 16u, li);
    store_tile(acc22, m0 + 32u, n0 + 32u, li);
    store_tile(acc23, m0 + 32u, n0 + 48u, li);
    store_tile(acc30, m0 + 48u, n0 + 0u, li);
    store_tile(acc31, m0 + 48u, n0 + 16u, li);
    store_tile(acc32, m0 + 48u, n0 + 32u, li);
    store_tile(acc33, m0 + 48u, n0 + 48u, li);
}
