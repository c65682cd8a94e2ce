// Normalisation of pooled features, viewed per image as [rows][cols] (cross-layer features:
// one row per pooling channel k). In the paper's order:
//   rows pass:   optional L2 of each row, then optional signed square root;
//                writes each row's sum of squares (after both) for the global pass;
//   global pass: optional L2 over the whole image's vector.
// A zero norm leaves its values at zero: no division by zero, no NaN.

// Keep in step with `NormParams` in src/gpu/normalize.rs (checked by a test).
struct NormParams {
    rows: u32,
    cols: u32,
    base: u32,       // element index of the chunk's first image in the data binding
    flags: u32,      // bit 0: row L2, bit 1: signed sqrt, bit 2: global L2
}

const WORKGROUP: u32 = 256u;
const ROW_L2: u32 = 1u;
const SIGNED_SQRT: u32 = 2u;

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
@group(0) @binding(2) var<storage, read_write> row_sq: array<f32>;  // [images][rows], chunk-relative

var<workgroup> partial: array<f32, 256>;

fn reduce(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s /= 2u) {
        if (li < s) {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// One workgroup per (row, image).
@compute @workgroup_size(WORKGROUP)
fn rows(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x;
    let img = wid.y;
    let start = p.base + (img * p.rows + row) * p.cols;
    var scale = 1.0;
    if ((p.flags & ROW_L2) != 0u) {
        var s = 0.0;
        for (var j = li; j < p.cols; j += WORKGROUP) {
            let v = data[start + j];
            s += v * v;
        }
        let norm = sqrt(reduce(li, s));
        scale = select(1.0, 1.0 / norm, norm > 0.0);
    }
    var s2 = 0.0;
    for (var j = li; j < p.cols; j += WORKGROUP) {
        var v = data[start + j] * scale;
        if ((p.flags & SIGNED_SQRT) != 0u) {
            v = sign(v) * sqrt(abs(v));
        }
        data[start + j] = v;
        s2 += v * v;
    }
    let total = reduce(li, s2);
    if (li == 0u) {
        row_sq[img * p.rows + row] = total;
    }
}

// Workgroups (chunk of the vector, image): each sums its image's row totals, then scales its
// chunk of WORKGROUP * 4 values.
@compute @workgroup_size(WORKGROUP)
fn global(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let img = wid.y;
    var s = 0.0;
    for (var r = li; r < p.rows; r += WORKGROUP) {
        s += row_sq[img * p.rows + r];
    }
    let norm = sqrt(reduce(li, s));
    let scale = select(1.0, 1.0 / norm, norm > 0.0);
    let len = p.rows * p.cols;
    let start = p.base + img * len;
    for (var q = 0u; q < 4u; q++) {
        let e = (wid.x * 4u + q) * WORKGROUP + li;
        if (e < len) {
            data[start + e] *= scale;
        }
    }
}
