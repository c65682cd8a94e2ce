//! `dst = lhs · rhs` in f32 on all cores through the `gemm` crate, behind one bounds-checked
//! call: the convolutions, cross-layer pooling and the classifier's Gram blocks use it.

/// A matrix read through strides: element `(r, c)` is `data[r * row + c * col]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Step between rows.
    pub row: usize,
    /// Step between columns.
    pub col: usize,
}

impl Strided<'_> {
    /// Whether a `rows` x `cols` matrix read this way stays inside `data`.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.row + (cols - 1) * self.col < self.data.len()
    }
}

/// `dst = lhs · rhs` with `dst` `m` x `n` row-major and contiguous, `lhs` `m` x `k` and `rhs`
/// `k` x `n`; `dst`'s old values are not read.
///
/// Panics if a matrix would be read or written outside its slice.
pub fn matmul(dst: &mut [f32], (m, n, k): (usize, usize, usize), lhs: Strided, rhs: Strided) {
    assert!(
        dst.len() >= m * n && lhs.holds(m, k) && rhs.holds(k, n),
        "matmul of {m}x{k} by {k}x{n} outside its operands"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every index gemm forms is inside the three slices, as checked above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col as isize,
            lhs.row as isize,
            rhs.data.as_ptr(),
            rhs.col as isize,
            rhs.row as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}
