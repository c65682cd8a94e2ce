// 2-D convolution for layers whose whole K (kh * kw * in_c) fits one 32-deep stage, such as
// the first layer of VGG (3 x 3 x 3 = 27 over RGB): the GEMM, the parameters and the output of
// conv2d.wgsl (read that file first), but the tile's A and B are gathered for all of K at
// once, one barrier, and each thread's 4 x 4 block is summed over exactly k_total steps
// instead of 16-deep slices padded with zeros. The host uses it only where k_total <= K_MAX
// (src/gpu/kernels/conv/tile.rs, ConvTile::Whole).

// ConvParams, the storage types, bindings 0-6 and store_output: include/conv2d_prelude.wgsl.

// Keep in step with the constants of the same names in src/gpu/kernels/conv/tile.rs (checked by a test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const K_MAX: u32 = 32u;
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const THREADS: u32 = 256u;
// Row stride of a_tile in vec4s: BM / 4 plus one of padding (see conv2d.wgsl).
const A_ROW: u32 = 17u;
const B_ROW: u32 = 16u;   // BN / 4

var<workgroup> a_tile: array<vec4<f32>, 544>;  // [K_MAX][A_ROW], vec4 = 4 consecutive m
var<workgroup> b_tile: array<vec4<f32>, 512>;  // [K_MAX][B_ROW], vec4 = 4 consecutive n

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
