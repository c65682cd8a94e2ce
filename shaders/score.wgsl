// Retrieval scores (the paper's eq. 3): for query q and database image i,
//   score[q][i] = sum over the query's selected channels k of dot(query[q][k], db[i][k]),
// where a row is a packed sign code (bits1 / sign2, counted with popcounts) or floats
// (stored as their bits, so that one binding layout serves all three entry points).
// One thread per (image, query): a thread reads whole rows of one image, so every memory
// transaction is a run of consecutive words; the query's rows are shared by the workgroup
// and stay in cache. Images run along the linearised x/y grid, queries along z.

// Keep in step with `ScoreParams` in src/gpu/score.rs (checked by a test).
struct ScoreParams {
    images: u32,     // database images in this binding
    rows: u32,       // rows (pooling channels) per image
    row_len: u32,    // u32 words per row (packed codes, or floats)
    ksel: u32,       // selected channels per query
    cols: u32,       // sign values per row (bits1: the +-1 count)
    out_stride: u32, // scores per query row in the output
    out_base: u32,   // first score of this binding's images in each query row
    _pad: u32,
}

const WORKGROUP: u32 = 64u;
const LOW_BITS: u32 = 0x55555555u;

@group(0) @binding(0) var<uniform> p: ScoreParams;
@group(0) @binding(1) var<storage, read> db: array<u32>;        // [images][rows][row_len]
@group(0) @binding(2) var<storage, read> query: array<u32>;     // [queries][rows][row_len]
@group(0) @binding(3) var<storage, read> selected: array<u32>;  // [queries][ksel]
@group(0) @binding(4) var<storage, read_write> scores: array<f32>; // [queries][out_stride]

fn image_index(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WORKGROUP + li;
}

// Word offsets of the query's s-th selected row, in the query (x) and in image i (y).
fn row_bases(q: u32, s: u32, i: u32) -> vec2<u32> {
    let k = selected[q * p.ksel + s];
    return vec2<u32>((q * p.rows + k) * p.row_len, (i * p.rows + k) * p.row_len);
}

// Popcount of a xor b over the selected rows (bits1: dot = ksel * cols - 2 * this).
@compute @workgroup_size(WORKGROUP)
fn bits1(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = image_index(li, wid, nwg);
    if (i >= p.images) {
        return;
    }
    let q = wid.z;
    var differ = 0u;
    for (var s = 0u; s < p.ksel; s++) {
        let base = row_bases(q, s, i);
        for (var w = 0u; w < p.row_len; w++) {
            differ += countOneBits(query[base.x + w] ^ db[base.y + w]);
        }
    }
    // Exact while ksel * cols < 2^24 (checked on the host).
    scores[q * p.out_stride + p.out_base + i] = f32(i32(p.ksel * p.cols) - 2 * i32(differ));
}

// 2-bit codes: bit 2j marks value j positive, bit 2j+1 negative; agreements minus
// disagreements of the non-zero signs.
@compute @workgroup_size(WORKGROUP)
fn sign2(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = image_index(li, wid, nwg);
    if (i >= p.images) {
        return;
    }
    let q = wid.z;
    var agree = 0u;
    var disagree = 0u;
    for (var s = 0u; s < p.ksel; s++) {
        let base = row_bases(q, s, i);
        for (var w = 0u; w < p.row_len; w++) {
            let a = query[base.x + w];
            let b = db[base.y + w];
            let ap = a & LOW_BITS;
            let an = (a >> 1u) & LOW_BITS;
            let bp = b & LOW_BITS;
            let bn = (b >> 1u) & LOW_BITS;
            agree += countOneBits((ap & bp) | (an & bn));
            disagree += countOneBits((ap & bn) | (an & bp));
        }
    }
    scores[q * p.out_stride + p.out_base + i] = f32(i32(agree) - i32(disagree));
}

// Float rows: plain dot products.
@compute @workgroup_size(WORKGROUP)
fn floats(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = image_index(li, wid, nwg);
    if (i >= p.images) {
        return;
    }
    let q = wid.z;
    var acc = 0.0;
    for (var s = 0u; s < p.ksel; s++) {
        let base = row_bases(q, s, i);
        for (var w = 0u; w < p.row_len; w++) {
            acc += bitcast<f32>(query[base.x + w]) * bitcast<f32>(db[base.y + w]);
        }
    }
    scores[q * p.out_stride + p.out_base + i] = acc;
}
