//! GFLOP/s of f32 GEMM candidates for the CPU backend on the products a VGG16 convolution at
//! 224x224, batch 1, becomes after im2col (rows: output pixels; columns: output channels;
//! depth: 3x3 x input channels), on all cores: the `gemm` crate (stable Rust), the
//! `matrixmultiply` crate (threading feature) and the system OpenBLAS through CBLAS. Best of 5
//! runs after one warm-up; prints one JSON line per shape.

use std::time::Instant;

const SHAPES: [(&str, usize, usize, usize); 5] = [
    ("conv1_2", 224 * 224, 64, 9 * 64),
    ("conv2_2", 112 * 112, 128, 9 * 128),
    ("conv3_2", 56 * 56, 256, 9 * 256),
    ("conv4_2", 28 * 28, 512, 9 * 512),
    ("conv5_2", 14 * 14, 512, 9 * 512),
];

/// Best GFLOP/s of `f` over 5 runs after a warm-up.
fn gflops(flops: f64, mut f: impl FnMut()) -> f64 {
    f();
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    flops / best / 1e9
}

fn main() {
    let threads = rayon::current_num_threads();
    for (name, m, n, k) in SHAPES {
        // C[m x n] = A[m x k] B[k x n], all row-major.
        let a: Vec<f32> = (0..m * k).map(|i| (i * 7919 % 1000) as f32 / 1e3).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i * 104_729 % 1000) as f32 / 1e3).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        let (ai, bi, ci) = (k as isize, n as isize, n as isize);
        // SAFETY (all three): the pointers cover m*k, k*n and m*n values with these strides.
        let gemm_crate = gflops(flops, || unsafe {
            gemm::gemm(
                m, n, k, c.as_mut_ptr(), 1, ci, false, a.as_ptr(), 1, ai, b.as_ptr(), 1, bi,
                0.0f32, 1.0f32, false, false, false, gemm::Parallelism::Rayon(threads),
            );
        });
        let matrixmultiply = gflops(flops, || unsafe {
            matrixmultiply::sgemm(
                m, k, n, 1.0, a.as_ptr(), ai, 1, b.as_ptr(), bi, 1, 0.0, c.as_mut_ptr(), ci, 1,
            );
        });
        let openblas = gflops(flops, || unsafe {
            use cblas_sys::{cblas_sgemm, CBLAS_LAYOUT::CblasRowMajor, CBLAS_TRANSPOSE::CblasNoTrans};
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasNoTrans, m as i32, n as i32, k as i32, 1.0,
                a.as_ptr(), k as i32, b.as_ptr(), n as i32, 0.0, c.as_mut_ptr(), n as i32,
            );
        });
        println!(
            "{{\"layer\": \"{name}\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"threads\": {threads}, \
             \"gemm\": {gemm_crate:.1}, \"matrixmultiply\": {matrixmultiply:.1}, \"openblas\": {openblas:.1}}}"
        );
    }
}
