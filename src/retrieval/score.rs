//! Similarity of a query to database images, on the CPU: the reference the GPU scoring kernel
//! is tested against, and the ranking both share.
//!
//! The paper's eq. 3 scores a query q against a reference r over a set S of pooling channels,
//! `s(q, r) = sum_{k in S} P_{q,k}^T P_{r,k}`, with S the k channels of layer t+1 with the
//! largest mean activation in the query. On sign codes the dot product of two rows is
//! counted with popcounts: 1-bit codes stand for +1 (bit set) and -1, so a row of `cols`
//! values gives `cols - 2 * popcount(q xor r)`; 2-bit codes stand for {-1, 0, +1}, so it is
//! the agreements of non-zero signs minus the disagreements.

use super::{IndexData, RetrievalIndex};
use crate::pooling::Quantization;

/// The `k` channels with the largest mean activation (ties: lower index first), in
/// ascending order; all channels when `k` is `None` or at least their number.
pub fn select_channels(guide_mean: &[f32], k: Option<usize>) -> Vec<u32> {
    let n = guide_mean.len();
    let k = k.unwrap_or(n).min(n);
    let mut order: Vec<u32> = (0..n as u32).collect();
    // NaN never comes from ReLU activations; treat it as smallest if it does.
    order.sort_by(|&a, &b| {
        let (x, y) = (guide_mean[a as usize], guide_mean[b as usize]);
        y.partial_cmp(&x)
            .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
            .then(a.cmp(&b))
    });
    let mut out = order[..k].to_vec();
    out.sort_unstable();
    out
}

/// Dot product of two packed rows of `cols` sign values.
pub fn code_row_dot(a: &[u32], b: &[u32], format: Quantization, cols: usize) -> i64 {
    match format {
        Quantization::Bits1 => {
            let ham: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
            cols as i64 - 2 * ham as i64
        }
        Quantization::Sign2 => {
            const LOW: u32 = 0x5555_5555;
            a.iter()
                .zip(b)
                .map(|(&x, &y)| {
                    let (xp, xn, yp, yn) = (x & LOW, (x >> 1) & LOW, y & LOW, (y >> 1) & LOW);
                    ((xp & yp) | (xn & yn)).count_ones() as i64
                        - ((xp & yn) | (xn & yp)).count_ones() as i64
                })
                .sum()
        }
    }
}

/// Eq. 3 on packed codes: the score of `query` (`[rows][words_per_row]`) against each of the
/// `db.len() / (rows * words_per_row)` images of `db`, over the channels `selected`.
pub fn score_codes(
    query: &[u32],
    db: &[u32],
    rows: usize,
    words_per_row: usize,
    selected: &[u32],
    format: Quantization,
    cols: usize,
) -> Vec<f32> {
    db.chunks_exact(rows * words_per_row)
        .map(|img| score_code_image(query, img, words_per_row, selected, format, cols))
        .collect()
}

/// Eq. 3 of `query` against one image's codes `img` (both `[rows][words_per_row]`).
fn score_code_image(
    query: &[u32],
    img: &[u32],
    words_per_row: usize,
    selected: &[u32],
    format: Quantization,
    cols: usize,
) -> f32 {
    selected
        .iter()
        .map(|&k| {
            let r = k as usize * words_per_row..(k as usize + 1) * words_per_row;
            code_row_dot(&query[r.clone()], &img[r], format, cols)
        })
        .sum::<i64>() as f32
}

/// Eq. 3 on float features (`[rows][cols]` per image), accumulated in f64; over all rows of
/// globally L2-normalised features it is the cosine similarity.
pub fn score_floats(
    query: &[f32],
    db: &[f32],
    rows: usize,
    cols: usize,
    selected: &[u32],
) -> Vec<f32> {
    db.chunks_exact(rows * cols)
        .map(|img| score_float_image(query, img, cols, selected))
        .collect()
}

/// Eq. 3 of `query` against one image's features `img` (both `[rows][cols]`), in f64.
fn score_float_image(query: &[f32], img: &[f32], cols: usize, selected: &[u32]) -> f32 {
    selected
        .iter()
        .map(|&k| {
            let r = k as usize * cols..(k as usize + 1) * cols;
            query[r.clone()]
                .iter()
                .zip(&img[r])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        })
        .sum::<f64>() as f32
}

/// Eq. 3 of every query against every image of `index`: `queries` is `[q][rows][row_len]`
/// in the index's encoding ([`RetrievalIndex::encode_query`]), `selected` is `[q][ksel]`.
/// Returns `[q][images]`.
pub fn score_index(
    index: &RetrievalIndex,
    queries: &[u32],
    selected: &[u32],
    ksel: usize,
) -> Vec<f32> {
    let per = index.rows * index.row_len();
    let mut out = Vec::with_capacity(queries.len() / per.max(1) * index.len());
    for (q, s) in queries.chunks(per).zip(selected.chunks(ksel)) {
        out.extend((0..index.len()).map(|i| score_image(index, q, s, i)));
    }
    out
}

/// Eq. 3 of one query (`[rows][row_len]`, over the channels `selected`) against image `i`.
fn score_image(index: &RetrievalIndex, query: &[u32], selected: &[u32], i: usize) -> f32 {
    let per = index.rows * index.row_len();
    match &index.data {
        IndexData::Codes {
            format,
            words_per_row,
            words,
        } => score_code_image(
            query,
            &words[i * per..(i + 1) * per],
            *words_per_row,
            selected,
            *format,
            index.cols,
        ),
        IndexData::Floats(v) => score_float_image(
            bytemuck::cast_slice(query),
            &v[i * per..(i + 1) * per],
            index.cols,
            selected,
        ),
    }
}

/// [`score_index`] on all cores (the CPU backend's scoring): the same sums, so the same
/// scores, with the images shared among rayon's threads.
pub fn score_index_parallel(
    index: &RetrievalIndex,
    queries: &[u32],
    selected: &[u32],
    ksel: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let per = index.rows * index.row_len();
    let n = index.len();
    let nq = queries.len().checked_div(per).unwrap_or(0);
    let mut out = vec![0.0f32; nq * n];
    if n == 0 {
        return out;
    }
    // Blocks of images, each scored against every query while its rows are in cache.
    const BLOCK: usize = 256;
    let mut blocks: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(BLOCK)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|i0| {
            let images = i0..(i0 + BLOCK).min(n);
            let mut scores = Vec::with_capacity(nq * images.len());
            for (q, s) in queries
                .chunks(per)
                .zip(selected.chunks(ksel.max(1)))
                .take(nq)
            {
                scores.extend(images.clone().map(|i| score_image(index, q, s, i)));
            }
            (i0, scores)
        })
        .collect();
    blocks.sort_unstable_by_key(|b| b.0);
    for (i0, scores) in blocks {
        let len = scores.len() / nq.max(1);
        for q in 0..nq {
            out[q * n + i0..q * n + i0 + len].copy_from_slice(&scores[q * len..(q + 1) * len]);
        }
    }
    out
}

/// Image indices by decreasing score (ties: lower index first), at most `top` of them,
/// leaving out `exclude`.
pub fn rank(scores: &[f32], top: usize, exclude: Option<usize>) -> Vec<usize> {
    let better = |a: &usize, b: &usize| {
        scores[*b]
            .partial_cmp(&scores[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    let mut idx: Vec<usize> = (0..scores.len()).filter(|&i| Some(i) != exclude).collect();
    if top < idx.len() {
        idx.select_nth_unstable_by(top, better);
        idx.truncate(top);
    }
    idx.sort_unstable_by(better);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::quantize;

    #[test]
    fn channels_by_mean_activation() {
        let m = [0.5, 2.0, 0.0, 2.0, 1.0];
        assert_eq!(select_channels(&m, Some(2)), vec![1, 3]);
        assert_eq!(select_channels(&m, Some(3)), vec![1, 3, 4]);
        assert_eq!(select_channels(&m, None), vec![0, 1, 2, 3, 4]);
        assert_eq!(select_channels(&m, Some(9)).len(), 5);
    }

    #[test]
    fn code_dots_equal_sign_dots() {
        // Values with zeros, 37 columns (two words of 1-bit codes, three of 2-bit codes).
        let cols = 37;
        let a: Vec<f32> = (0..cols).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        let b: Vec<f32> = (0..cols).map(|i| ((i * 3 % 7) as f32) - 3.0).collect();
        let sign = |v: f32| {
            if v > 0.0 {
                1
            } else if v < 0.0 {
                -1
            } else {
                0
            }
        };
        let pm = |v: f32| if v > 0.0 { 1 } else { -1 };
        let want2: i64 = a.iter().zip(&b).map(|(x, y)| sign(*x) * sign(*y)).sum();
        let want1: i64 = a.iter().zip(&b).map(|(x, y)| pm(*x) * pm(*y)).sum();
        for (q, want) in [(Quantization::Sign2, want2), (Quantization::Bits1, want1)] {
            let (qa, qb) = (quantize(&a, cols, q), quantize(&b, cols, q));
            assert_eq!(code_row_dot(&qa, &qb, q, cols), want, "{q:?}");
            assert_eq!(code_row_dot(&qa, &qa, q, cols), {
                let s: i64 = a.iter().map(|x| sign(*x) * sign(*x)).sum();
                if q == Quantization::Bits1 {
                    cols as i64
                } else {
                    s
                }
            });
        }
    }

    #[test]
    fn ranking_orders_and_excludes() {
        let s = [0.1, 0.9, 0.5, 0.9, -1.0];
        assert_eq!(rank(&s, 10, None), vec![1, 3, 2, 0, 4]);
        assert_eq!(rank(&s, 2, None), vec![1, 3]);
        assert_eq!(rank(&s, 2, Some(1)), vec![3, 2]);
    }
}
