// Max pooling over NHWC activations, PyTorch semantics (floor output size, padding never wins).
// One thread per output element; consecutive threads take consecutive channels so that loads
// and stores are coalesced.

// Keep in step with `PoolParams` in src/gpu/pool.rs (checked by a test).
struct PoolParams {
    in_h: u32,
    in_w: u32,
    c: u32,
    in_base: u32,
    out_h: u32,
    out_w: u32,
    out_base: u32,
    out_row0: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    in_row0: u32,
    count: u32,     // output elements in this band
}

const WORKGROUP: u32 = 256u;

// Storage types of the input and output: the f32 kernel; the host compiles the f16 variants
// by rewriting these lines (src/gpu/pool.rs). A maximum is exact in either type.
alias in_t = f32;
alias out_t = f32;

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> input: array<in_t>;
@group(0) @binding(2) var<storage, read_write> output: array<out_t>;

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
    let m = e / p.c;
    let q = p.out_row0 + m / p.out_w;
    let ox = m % p.out_w;
    let img = q / p.out_h;
    let oy = q % p.out_h;
    let row = i32(img * p.in_h) - i32(p.in_row0);
    let iy0 = i32(oy * p.stride_h) - i32(p.pad_h);
    let ix0 = i32(ox * p.stride_w) - i32(p.pad_w);
    var best = -3.402823e38;
    var seen = false;
    for (var ky = 0; ky < i32(p.kh); ky++) {
        let iy = iy0 + ky;
        if (iy < 0 || iy >= i32(p.in_h)) {
            continue;
        }
        for (var kx = 0; kx < i32(p.kw); kx++) {
            let ix = ix0 + kx;
            if (ix < 0 || ix >= i32(p.in_w)) {
                continue;
            }
            let v = f32(input[u32((row + iy) * i32(p.in_w) + ix) * p.c + c + p.in_base]);
            // The first real element initialises the max so -inf inputs survive unchanged.
            if (!seen || v > best) {
                best = v;
            }
            seen = true;
        }
    }
    output[p.out_base + e] = out_t(best);
}
