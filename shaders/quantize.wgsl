// Sign quantisation of features viewed per image as [rows][cols], packed per row so that a
// row (one pooling channel) can be read alone:
//   sign2: 16 values per u32, value j at bits 2 (j % 16): 00 zero, 01 positive, 10 negative;
//   bits1: 32 values per u32, bit j % 32 set when the value is positive.
// Rows are padded to whole words with zero codes. One thread per output word.

// Keep in step with `QuantParams` in src/gpu/quantize.rs (checked by a test).
struct QuantParams {
    rows: u32,
    cols: u32,
    words_per_row: u32,
    base: u32,       // element index of the chunk's first image in the input binding
    out_base: u32,   // word index of the chunk's first image in the output binding
    words: u32,      // output words in this dispatch
    _pad0: u32,
    _pad1: u32,
}

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<uniform> p: QuantParams;
@group(0) @binding(1) var<storage, read> data: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;

fn word_index(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP + li;
}

@compute @workgroup_size(WORKGROUP)
fn sign2(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = word_index(li, wid, nwg);
    if (w >= p.words) {
        return;
    }
    let row = w / p.words_per_row;   // image * rows + row
    let j0 = (w % p.words_per_row) * 16u;
    var word = 0u;
    for (var q = 0u; q < 16u; q++) {
        let j = j0 + q;
        if (j < p.cols) {
            let v = data[p.base + row * p.cols + j];
            let code = select(select(0u, 2u, v < 0.0), 1u, v > 0.0);
            word |= code << (2u * q);
        }
    }
    packed[p.out_base + w] = word;
}

@compute @workgroup_size(WORKGROUP)
fn bits1(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = word_index(li, wid, nwg);
    if (w >= p.words) {
        return;
    }
    let row = w / p.words_per_row;
    let j0 = (w % p.words_per_row) * 32u;
    var word = 0u;
    for (var q = 0u; q < 32u; q++) {
        let j = j0 + q;
        if (j < p.cols && data[p.base + row * p.cols + j] > 0.0) {
            word |= 1u << q;
        }
    }
    packed[p.out_base + w] = word;
}
