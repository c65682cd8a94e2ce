// Baseline pooling of an NHWC activation over rectangular regions (the whole map, or the cells
// of a spatial pyramid): out[n][r][c] = sum or max of x[n][y][x][c] over region r. Mode 2 takes
// the signed square root of the sum: with the receptive fields of a later layer's units as the
// regions, the output is the NHWC map of FC-Conv pooling's local features on that layer's grid.
// One thread per output value; consecutive threads take consecutive channels.

// Keep in step with `RegionParams` in src/gpu/region_pool.rs (checked by a test).
struct RegionParams {
    h: u32,
    w: u32,
    c: u32,
    regions: u32,
    base: u32,       // element index of the chunk's first image in the input binding
    count: u32,      // output values in this dispatch: images * regions * c
    mode: u32,       // 0: sum, 1: max, 2: signed square root of the sum
    out_base: u32,   // element index of the chunk's first output in the output binding
}

const WORKGROUP: u32 = 256u;
// `mode` values (the host checks these against its own constants).
const MODE_SUM: u32 = 0u;
const MODE_MAX: u32 = 1u;
const MODE_SUM_SQRT: u32 = 2u;

@group(0) @binding(0) var<uniform> p: RegionParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> boxes: array<vec4<u32>>;   // (y0, y1, x0, x1), half-open
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

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
    let c = e % p.c;
    let r = (e / p.c) % p.regions;
    let img = e / (p.c * p.regions);
    let b = boxes[r];
    var acc = 0.0;
    var first = true;
    for (var y = b.x; y < b.y; y++) {
        for (var x = b.z; x < b.w; x++) {
            let v = input[p.base + ((img * p.h + y) * p.w + x) * p.c + c];
            if (p.mode == MODE_MAX) {
                acc = select(max(acc, v), v, first);
            } else {
                acc += v;
            }
            first = false;
        }
    }
    if (p.mode == MODE_SUM_SQRT) {
        acc = sign(acc) * sqrt(abs(acc));
    }
    output[p.out_base + e] = acc;
}
