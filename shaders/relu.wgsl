// In-place ReLU over a range of a buffer. One thread per element.
// `select` rather than `max` pins down the WGSL-unspecified cases: -0.0 and NaN become +0.0,
// matching the reference on every backend.

// Keep in step with `ReluParams` in src/gpu/relu.rs (checked by a test).
struct ReluParams {
    base: u32,   // element index of the range's start within the binding
    count: u32,  // elements in the range
    _pad0: u32,
    _pad1: u32,
}

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<uniform> p: ReluParams;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = (wid.y * nwg.x + wid.x) * WORKGROUP + li;
    if (e < p.count) {
        let x = data[p.base + e];
        data[p.base + e] = select(0.0, x, x > 0.0);
    }
}
