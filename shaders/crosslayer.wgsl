// Cross-layer pooling: for each group of images, C[k][j] = sum_i A_i[k] * X_i[j], the sum of
// outer products of the guidance features a_i (layer t+1) and the local features x_i (layer t)
// over the spatial units i of the group; that is P = A^T X, stored [D_{t+1}][D_t'] channel-major.
//
// Each operand is read where the forward pass left it (NHWC). A local feature may be the
// concatenation of an m x n neighbourhood (zero outside the map), ordered (dy, dx, channel)
// like a convolution's input patch; a 1x1 window takes the unit's own vector. With a group
// of one image this is the per-image representation; with the whole batch as one group and
// A = X it is the batch's sum of x x^T, the second moment that PCA is fitted on.
//
// Max channel pooling (the paper's section 4.3 variant) replaces the sum by a maximum over the
// units of the group, zero products of padded window taps included (they are part of the local
// feature); staged units past the group's end are left out of the maximum.
//
// Tiling as in conv2d.wgsl: 64 x 64 output tiles, 16 units per step staged in workgroup
// memory, a 4 x 4 block per thread in four vec4 accumulators.

// Keep in step with `CrossParams` in src/gpu/crosslayer.rs (checked by a test).
struct CrossParams {
    h: u32,
    w: u32,
    units: u32,          // units per group: group_images * h * w
    group_images: u32,
    a_c: u32,            // channels of the A activation; 0: A is the constant 1 (a_feat = 1)
    a_base: u32,         // element index of the chunk's first image in the A binding
    a_win_h: u32,
    a_win_w: u32,
    a_feat: u32,         // a_win_h * a_win_w * a_c: rows of C
    x_c: u32,
    x_base: u32,
    x_win_h: u32,
    x_win_w: u32,
    x_feat: u32,         // columns of C
    out_base: u32,       // element index of the chunk's first output in the output binding
    accumulate: u32,     // 1: add to the output instead of overwriting it
    channel_max: u32,    // 1: C[k][j] = max_i A_i[k] * X_i[j] instead of the sum
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
// Threads per workgroup along x and y (the host checks these against its own constants).
const WG_X: u32 = 16u;
const WG_Y: u32 = 16u;
const ROW: u32 = 16u;    // vec4s per staged row (64 / 4)

@group(0) @binding(0) var<uniform> p: CrossParams;
@group(0) @binding(1) var<storage, read> act_a: array<f32>;
@group(0) @binding(2) var<storage, read> act_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

var<workgroup> a_tile: array<vec4<f32>, 256>;  // [BK][ROW]: 64 rows of C per unit
var<workgroup> x_tile: array<vec4<f32>, 256>;  // [BK][ROW]: 64 columns of C per unit

// Feature f of the local feature of unit u (index within the group) of group g, for an
// operand with `c` channels and an m x n window, or 0 outside the map or past `feat`.
fn gather_a(g: u32, u: u32, f: u32) -> f32 {
    if (u >= p.units || f >= p.a_feat) {
        return 0.0;
    }
    if (p.a_c == 0u) {
        return 1.0;   // constant guidance: the output row is the plain sum of local features
    }
    let plane = p.h * p.w;
    let img = g * p.group_images + u / plane;
    if (p.a_win_h == 1u && p.a_win_w == 1u) {
        return act_a[p.a_base + (img * plane + u % plane) * p.a_c + f];
    }
    let yx = u % plane;
    let c = f % p.a_c;
    let dxy = f / p.a_c;
    let yy = i32(yx / p.w) + i32(dxy / p.a_win_w) - i32(p.a_win_h / 2u);
    let xx = i32(yx % p.w) + i32(dxy % p.a_win_w) - i32(p.a_win_w / 2u);
    if (yy < 0 || yy >= i32(p.h) || xx < 0 || xx >= i32(p.w)) {
        return 0.0;
    }
    return act_a[p.a_base + ((img * p.h + u32(yy)) * p.w + u32(xx)) * p.a_c + c];
}

fn gather_x(g: u32, u: u32, f: u32) -> f32 {
    if (u >= p.units || f >= p.x_feat) {
        return 0.0;
    }
    let plane = p.h * p.w;
    let img = g * p.group_images + u / plane;
    if (p.x_win_h == 1u && p.x_win_w == 1u) {
        return act_x[p.x_base + (img * plane + u % plane) * p.x_c + f];
    }
    let yx = u % plane;
    let c = f % p.x_c;
    let dxy = f / p.x_c;
    let yy = i32(yx / p.w) + i32(dxy / p.x_win_w) - i32(p.x_win_h / 2u);
    let xx = i32(yx % p.w) + i32(dxy % p.x_win_w) - i32(p.x_win_w / 2u);
    if (yy < 0 || yy >= i32(p.h) || xx < 0 || xx >= i32(p.w)) {
        return 0.0;
    }
    return act_x[p.x_base + ((img * p.h + u32(yy)) * p.w + u32(xx)) * p.x_c + c];
}

fn store(g: u32, k: u32, j: u32, v: vec4<f32>) {
    if (k >= p.a_feat) {
        return;
    }
    let base = p.out_base + (g * p.a_feat + k) * p.x_feat + j;
    for (var q = 0u; q < 4u; q++) {
        if (j + q < p.x_feat) {
            if (p.accumulate != 0u) {
                output[base + q] += v[q];
            } else {
                output[base + q] = v[q];
            }
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let k0 = wid.x * BM;
    let j0 = wid.y * BN;
    let g = wid.z;
    // Each thread stages 4 values of each operand per step: feature li % 64 of units
    // li / 64 + 4 q, so that neighbouring threads read neighbouring channels.
    let col = li % 64u;
    let unit = li / 64u;

    let use_max = p.channel_max != 0u;
    // The lowest finite f32: WGSL has no infinity literal, and any product is at least this.
    let start = select(0.0, -3.40282347e38, use_max);
    var acc0 = vec4<f32>(start);
    var acc1 = vec4<f32>(start);
    var acc2 = vec4<f32>(start);
    var acc3 = vec4<f32>(start);

    for (var u0 = 0u; u0 < p.units; u0 += BK) {
        for (var q = 0u; q < 4u; q++) {
            let uu = unit + 4u * q;
            a_tile[uu * ROW + col / 4u][col % 4u] = gather_a(g, u0 + uu, k0 + col);
            x_tile[uu * ROW + col / 4u][col % 4u] = gather_x(g, u0 + uu, j0 + col);
        }
        workgroupBarrier();
        if (use_max) {
            // Uniform across the workgroup: u0 and p.units are.
            let staged = min(BK, p.units - u0);
            for (var uu = 0u; uu < staged; uu++) {
                let a = a_tile[uu * ROW + lid.y];
                let x = x_tile[uu * ROW + lid.x];
                acc0 = max(acc0, vec4<f32>(a.x) * x);
                acc1 = max(acc1, vec4<f32>(a.y) * x);
                acc2 = max(acc2, vec4<f32>(a.z) * x);
                acc3 = max(acc3, vec4<f32>(a.w) * x);
            }
        } else {
            for (var uu = 0u; uu < BK; uu++) {
                let a = a_tile[uu * ROW + lid.y];
                let x = x_tile[uu * ROW + lid.x];
                acc0 = fma(vec4<f32>(a.x), x, acc0);
                acc1 = fma(vec4<f32>(a.y), x, acc1);
                acc2 = fma(vec4<f32>(a.z), x, acc2);
                acc3 = fma(vec4<f32>(a.w), x, acc3);
            }
        }
        workgroupBarrier();
    }

    let k = k0 + lid.y * 4u;
    let j = j0 + lid.x * 4u;
    store(g, k, j, acc0);
    store(g, k + 1u, j, acc1);
    store(g, k + 2u, j, acc2);
    store(g, k + 3u, j, acc3);
}
