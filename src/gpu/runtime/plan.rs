//! Splitting work so that every storage binding fits the device's binding limit.
//!
//! Activations are NHWC, so any run of "flat rows" (row `y` of image `n` is flat row
//! `n * h + y`) is one contiguous range of memory. A windowed op (convolution, pooling) is split
//! into bands of output flat rows; each band reads one contiguous range of input flat rows.
//! Bands may span several images or cover part of one, so neither a large batch nor a single
//! large image needs special handling.

use super::buffer::{Binding, GpuBuffer};
use crate::error::{Error, Result};
use crate::shape::{Shape4, Window2d};

/// A byte range of a buffer to bind, with the element index of the wanted data inside it
/// (binding offsets must be aligned, so the range may start a little before the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingWindow {
    /// Aligned byte offset of the binding.
    pub offset: u64,
    /// Bytes bound.
    pub size: u64,
    /// Index (in elements) of the first wanted element within the binding.
    pub base: u32,
}

impl BindingWindow {
    /// The window covering f32 elements `[start, start + len)` with offset aligned to `align`.
    pub fn new(start: u64, len: u64, align: u64) -> Self {
        Self::of(start, len, align, 4)
    }

    /// The window covering elements `[start, start + len)` of `elem` bytes each, with offset
    /// aligned to `align` and size rounded up to whole 4-byte words (as bindings must be).
    pub fn of(start: u64, len: u64, align: u64, elem: u64) -> Self {
        let start_b = start * elem;
        let offset = start_b / align * align;
        BindingWindow {
            offset,
            size: (start_b + len.max(1) * elem).next_multiple_of(4) - offset,
            base: ((start_b - offset) / elem) as u32,
        }
    }

    /// This window of `buffer`, to bind.
    pub fn bind<'a>(&self, buffer: &'a GpuBuffer) -> Binding<'a> {
        Binding {
            buffer,
            offset: self.offset,
            size: self.size,
        }
    }
}

/// Output flat rows `[out_row0, out_row0 + out_rows)` and the input flat rows they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowBand {
    /// First output flat row (`n * out_h + oy`).
    pub out_row0: usize,
    /// Number of output flat rows.
    pub out_rows: usize,
    /// First input flat row bound.
    pub in_row0: usize,
    /// Number of input flat rows bound (at least one, so the binding is never empty).
    pub in_rows: usize,
}

impl RowBand {
    /// The binding windows of this band's input and output rows (`in_row`, `out_row` elements
    /// a flat row, of `in_bytes` and `out_bytes` each). The planner sizes bands for f32, so
    /// f16 windows, half as large, fit too.
    pub fn windows(
        &self,
        (in_row, out_row): (u64, u64),
        (in_bytes, out_bytes): (u64, u64),
        align: u64,
    ) -> (BindingWindow, BindingWindow) {
        (
            BindingWindow::of(
                self.in_row0 as u64 * in_row,
                self.in_rows as u64 * in_row,
                align,
                in_bytes,
            ),
            BindingWindow::of(
                self.out_row0 as u64 * out_row,
                self.out_rows as u64 * out_row,
                align,
                out_bytes,
            ),
        )
    }
}

/// Device limits that bound the size of one band.
#[derive(Clone, Copy, Debug)]
pub struct BandLimits {
    /// Bytes one binding may cover.
    pub binding_cap: u64,
    /// Binding offset alignment in bytes.
    pub align: u64,
    /// Most output flat rows one dispatch may cover (from the workgroup-count limit).
    pub max_out_rows: usize,
}

/// Splits a windowed op over `input` with output `out` into bands that each fit `limits`.
/// `op` names the operation in errors.
pub fn plan_row_bands(
    op: &'static str,
    input: Shape4,
    out: Shape4,
    window: &Window2d,
    limits: BandLimits,
) -> Result<Vec<RowBand>> {
    let in_row_elems = (input.w * input.c) as u64;
    let out_row_elems = (out.w * out.c) as u64;
    let total_in_rows = input.n * input.h;
    let total_out = out.n * out.h;
    // Input flat rows read by output flat row q.
    let in_span = |q: usize| {
        let (lo, hi) = window.input_rows(q % out.h, input.h);
        let base = q / out.h * input.h;
        (base + lo, base + hi)
    };
    let band = |q0: usize, q1: usize| {
        let lo = in_span(q0).0;
        let hi = in_span(q1 - 1).1.max(lo);
        // Rows with no input (padding only) still bind one real row.
        let lo = lo.min(total_in_rows - 1);
        let rows = (hi - lo).max(1);
        RowBand {
            out_row0: q0,
            out_rows: q1 - q0,
            in_row0: lo,
            in_rows: rows,
        }
    };
    let fits = |b: &RowBand| {
        let i = BindingWindow::new(
            b.in_row0 as u64 * in_row_elems,
            b.in_rows as u64 * in_row_elems,
            limits.align,
        );
        let o = BindingWindow::new(
            b.out_row0 as u64 * out_row_elems,
            b.out_rows as u64 * out_row_elems,
            limits.align,
        );
        i.size <= limits.binding_cap
            && o.size <= limits.binding_cap
            && b.out_rows <= limits.max_out_rows
    };
    let mut bands = Vec::new();
    let mut q0 = 0;
    while q0 < total_out {
        let first = band(q0, q0 + 1);
        if !fits(&first) {
            let need = (first.in_rows as u64 * in_row_elems).max(out_row_elems) * 4 + limits.align;
            return Err(Error::DeviceLimit {
                what: format!("{op} on input {input}: one output row"),
                needed: need,
                limit: limits.binding_cap,
                limit_name: "max_storage_buffer_binding_size",
                hint: "use smaller images",
            });
        }
        // Grow the band by doubling, then bisect to the largest that fits.
        let mut good = q0 + 1;
        let mut step = 1;
        while good < total_out {
            let next = (good + step).min(total_out);
            if fits(&band(q0, next)) {
                good = next;
                step *= 2;
            } else if step == 1 {
                break;
            } else {
                step /= 2;
            }
        }
        bands.push(band(q0, good));
        q0 = good;
    }
    Ok(bands)
}

/// Splits `n` images into runs `(first, count)` such that, for every binding `b`, `count`
/// images of `per_image_bytes[b]` fit one binding (with alignment slack), and `count` is at
/// most `max_count` (a dispatch-dimension limit).
pub fn plan_image_chunks(
    op: &'static str,
    n: usize,
    per_image_bytes: &[u64],
    limits: BandLimits,
    max_count: usize,
) -> Result<Vec<(usize, usize)>> {
    let usable = limits.binding_cap.saturating_sub(limits.align);
    let mut per_chunk = max_count.max(1);
    for &b in per_image_bytes {
        let fit = (usable / b.max(1)) as usize;
        if fit == 0 {
            return Err(Error::DeviceLimit {
                what: format!("{op}: the data of one image"),
                needed: b + limits.align,
                limit: limits.binding_cap,
                limit_name: "max_storage_buffer_binding_size",
                hint: "use smaller images or fewer feature dimensions",
            });
        }
        per_chunk = per_chunk.min(fit);
    }
    Ok((0..n)
        .step_by(per_chunk)
        .map(|s| (s, per_chunk.min(n - s)))
        .collect())
}

/// Splits `len` elements into chunks that each fit one binding and `max_chunk` elements.
pub fn plan_chunks(len: u64, limits: BandLimits, max_chunk: u64) -> Vec<(u64, u64)> {
    // Leave room for the alignment slack in front of a misaligned start.
    let cap_elems = ((limits.binding_cap - limits.align.min(limits.binding_cap / 2)) / 4)
        .min(max_chunk)
        .max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < len {
        let n = cap_elems.min(len - start);
        out.push((start, n));
        start += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cap: u64) -> BandLimits {
        BandLimits {
            binding_cap: cap,
            align: 256,
            max_out_rows: usize::MAX,
        }
    }

    #[test]
    fn window_aligns_down_and_keeps_data() {
        let w = BindingWindow::new(100, 10, 256);
        assert_eq!(w.offset, 256);
        assert_eq!(w.base, 36);
        assert_eq!(w.size, 440 - 256);
    }

    /// Every output row is covered exactly once, every band's input covers what its rows read,
    /// and every binding fits the cap.
    fn check_cover(input: Shape4, window: Window2d, cap: u64) -> usize {
        let (oh, ow) = window.output_hw("t", input.h, input.w).unwrap();
        let out = Shape4::new(input.n, oh, ow, 5);
        let bands = plan_row_bands("t", input, out, &window, limits(cap)).unwrap();
        let mut next = 0;
        for b in &bands {
            assert_eq!(b.out_row0, next);
            next += b.out_rows;
            for q in b.out_row0..b.out_row0 + b.out_rows {
                let (lo, hi) = window.input_rows(q % oh, input.h);
                let base = q / oh * input.h;
                if hi > lo {
                    assert!(
                        base + lo >= b.in_row0 && base + hi <= b.in_row0 + b.in_rows,
                        "{b:?} q={q}"
                    );
                }
            }
            let row = (input.w * input.c) as u64;
            let win = BindingWindow::new(b.in_row0 as u64 * row, b.in_rows as u64 * row, 256);
            assert!(win.size <= cap);
        }
        assert_eq!(next, input.n * oh);
        bands.len()
    }

    #[test]
    fn bands_cover_everything_within_cap() {
        let input = Shape4::new(3, 37, 11, 7);
        // Whole batch in one band when the cap allows it.
        assert_eq!(check_cover(input, Window2d::square(3, 1, 1), 1 << 30), 1);
        // Several bands per image with a small cap, odd strides, kernels and padding.
        assert!(check_cover(input, Window2d::square(3, 1, 1), 4096) > 3);
        assert!(check_cover(input, Window2d::square(5, 2, 2), 3000) > 3);
        assert!(check_cover(input, Window2d::square(1, 1, 1), 2048) > 3);
        assert!(check_cover(input, Window2d::square(11, 4, 2), 11 * 77 * 4 + 512) > 3);
    }

    #[test]
    fn a_row_too_big_for_one_binding_is_an_error() {
        let input = Shape4::new(1, 8, 100, 100);
        let out = Shape4::new(1, 8, 100, 4);
        let err = plan_row_bands(
            "conv2d",
            input,
            out,
            &Window2d::square(3, 1, 1),
            limits(40_000),
        );
        assert!(matches!(err, Err(Error::DeviceLimit { .. })));
    }

    #[test]
    fn image_chunks_fit_every_binding() {
        let c = plan_image_chunks("t", 10, &[100, 300], limits(1000), 4).unwrap();
        assert_eq!(c, vec![(0, 2), (2, 2), (4, 2), (6, 2), (8, 2)]);
        let c = plan_image_chunks("t", 5, &[10], limits(1 << 20), 2).unwrap();
        assert_eq!(c, vec![(0, 2), (2, 2), (4, 1)]);
        assert!(plan_image_chunks("t", 1, &[900], limits(1000), 4).is_err());
    }

    #[test]
    fn chunks_cover_everything() {
        let c = plan_chunks(1000, limits(1024), u64::MAX);
        assert_eq!(c.iter().map(|x| x.1).sum::<u64>(), 1000);
        assert!(c.iter().all(|x| x.1 * 4 + 256 <= 1024));
    }
}
