//! Cross-layer pooling, normalisation, quantisation and baseline pooling kernels against the
//! CPU reference.

mod common;

use common::{assert_reduction_close, gpu, gpu_with_binding_cap, random};
use crosspool::gpu::crosslayer::Guidance;
use crosspool::gpu::{
    CrossLayerKernel, GpuContext, GpuFeatures, GpuRegions, GpuTensor, NormalizeKernel,
    QuantizeKernel, RegionPoolKernel,
};
use crosspool::pooling::{
    pyramid_regions, LocalWindow, Normalization, Quantization, RegionPoolMode,
};
use crosspool::reference::{self, f32_dot_error_bound, Reduced};
use crosspool::shape::Shape4;

/// Activations like a ReLU layer's: about half zeros, the rest positive.
fn relu_like(len: usize, seed: u64) -> Vec<f32> {
    random(len, seed).iter().map(|v| v.max(0.0)).collect()
}

#[allow(clippy::too_many_arguments)]
fn cross_on(
    ctx: &GpuContext,
    a_shape: Shape4,
    a_win: Option<LocalWindow>,
    x_shape: Shape4,
    x_win: LocalWindow,
    group: usize,
    seed: u64,
    what: &str,
) {
    let x = relu_like(x_shape.len(), seed);
    let a = relu_like(a_shape.len(), seed + 1);
    let gx = GpuTensor::upload(ctx, &x, x_shape, "x").unwrap();
    let ga = GpuTensor::upload(ctx, &a, a_shape, "a").unwrap();
    let (want, rows) = match a_win {
        Some(w) => (
            reference::cross_layer(&a, a_shape, w, &x, x_shape, x_win, group).unwrap(),
            w.feature_len(a_shape.c),
        ),
        None => {
            // Ones: the reference is the cross-layer sum with a 1-channel map of ones.
            let ones = vec![1.0; x_shape.n * x_shape.h * x_shape.w];
            let s1 = Shape4::new(x_shape.n, x_shape.h, x_shape.w, 1);
            (
                reference::cross_layer(&ones, s1, LocalWindow::UNIT, &x, x_shape, x_win, group)
                    .unwrap(),
                1,
            )
        }
    };
    let guidance = match a_win {
        Some(w) => Guidance::Layer(&ga, w),
        None => Guidance::Ones,
    };
    let cols = x_win.feature_len(x_shape.c);
    let out = GpuFeatures::new(ctx, x_shape.n / group, rows, cols, "p").unwrap();
    let k = CrossLayerKernel::new(ctx).unwrap();
    // Twice, the second accumulating: the result must be twice the sum.
    for acc in [false, true] {
        ctx.submit("t", |enc| {
            k.record(ctx, enc, guidance, &gx, x_win, group, &out, acc)
        })
        .unwrap();
    }
    let got: Vec<f32> = out.download(ctx).unwrap().iter().map(|v| v / 2.0).collect();
    let terms = group * x_shape.h * x_shape.w;
    assert_reduction_close(&got, &want, terms + 1, what);
}

#[test]
fn cross_layer_per_image_odd_grid_and_channels() {
    let (n, h, w) = (3, 5, 7);
    cross_on(
        gpu(),
        Shape4::new(n, h, w, 70),
        Some(LocalWindow::UNIT),
        Shape4::new(n, h, w, 17),
        LocalWindow::UNIT,
        1,
        1,
        "1x1 17x70",
    );
}

#[test]
fn cross_layer_with_neighbourhood_local_features() {
    let (n, h, w) = (2, 6, 5);
    let win = LocalWindow::new(3, 3).unwrap();
    cross_on(
        gpu(),
        Shape4::new(n, h, w, 65),
        Some(LocalWindow::UNIT),
        Shape4::new(n, h, w, 9),
        win,
        1,
        2,
        "3x3 neighbourhoods",
    );
    let win = LocalWindow::new(1, 3).unwrap();
    cross_on(
        gpu(),
        Shape4::new(n, h, w, 5),
        Some(LocalWindow::UNIT),
        Shape4::new(n, h, w, 33),
        win,
        1,
        3,
        "1x3 neighbourhoods",
    );
}

/// The batch as one group with A = X: the second moment PCA is fitted on, and the
/// single-layer Gram baseline per image.
#[test]
fn second_moment_gram_and_first_moment() {
    let s = Shape4::new(4, 4, 3, 20);
    let win = LocalWindow::new(3, 1).unwrap();
    let ctx = gpu();
    let x = relu_like(s.len(), 4);
    let gx = GpuTensor::upload(ctx, &x, s, "x").unwrap();
    let k = CrossLayerKernel::new(ctx).unwrap();
    for (group, w, what) in [
        (4, win, "second moment, 3x1"),
        (1, LocalWindow::UNIT, "gram per image"),
    ] {
        let want = reference::cross_layer(&x, s, w, &x, s, w, group).unwrap();
        let f = w.feature_len(s.c);
        let out = GpuFeatures::new(ctx, s.n / group, f, f, "m2").unwrap();
        ctx.submit("t", |enc| {
            k.record(
                ctx,
                enc,
                Guidance::Layer(&gx, w),
                &gx,
                w,
                group,
                &out,
                false,
            )
        })
        .unwrap();
        assert_reduction_close(
            &out.download(ctx).unwrap(),
            &want,
            group * s.h * s.w + 1,
            what,
        );
    }
    cross_on(ctx, s, None, s, win, 4, 5, "first moment (ones)");
}

#[test]
fn cross_layer_split_into_image_chunks_under_small_binding_cap() {
    let ctx = gpu_with_binding_cap(8 * 1024);
    let (n, h, w) = (7, 3, 5);
    cross_on(
        &ctx,
        Shape4::new(n, h, w, 24),
        Some(LocalWindow::UNIT),
        Shape4::new(n, h, w, 19),
        LocalWindow::UNIT,
        1,
        6,
        "chunked",
    );
}

fn normalize_check(
    ctx: &GpuContext,
    images: usize,
    rows: usize,
    cols: usize,
    norm: Normalization,
    seed: u64,
) {
    let mut x = random(images * rows * cols, seed);
    // An all-zero row, and an all-zero image when there are several: no NaN, zeros stay.
    x[cols..2 * cols].iter_mut().for_each(|v| *v = 0.0);
    if images > 1 {
        x[rows * cols..2 * rows * cols]
            .iter_mut()
            .for_each(|v| *v = 0.0);
    }
    let mut want = x.clone();
    reference::normalize(&mut want, rows, cols, norm);
    let f = GpuFeatures::new(ctx, images, rows, cols, "f").unwrap();
    ctx.queue
        .write_buffer(&f.buffer, 0, bytemuck::cast_slice(&x));
    let k = NormalizeKernel::new(ctx).unwrap();
    ctx.submit("t", |enc| k.record(ctx, enc, &f, norm)).unwrap();
    let got = f.download(ctx).unwrap();
    // Each value is scaled by norms from f32 sums of `cols` and `rows` terms (relative error
    // at most gamma_n each); a square root halves a relative error.
    let tol = f32_dot_error_bound(cols) + f32_dot_error_bound(rows) + 4.0 * f32::EPSILON;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g.is_finite(), "{norm:?}: element {i} is {g}");
        assert!(
            (g - w).abs() <= tol * w.abs(),
            "{norm:?}: element {i}: gpu {g} vs reference {w}"
        );
    }
}

#[test]
fn normalization_every_combination_with_zero_rows() {
    for flags in 0..8u32 {
        let norm = Normalization {
            channel_l2: flags & 1 != 0,
            signed_sqrt: flags & 2 != 0,
            global_l2: flags & 4 != 0,
        };
        normalize_check(gpu(), 3, 5, 300, norm, 10 + flags as u64);
    }
}

#[test]
fn normalization_chunked_under_small_binding_cap() {
    normalize_check(
        &gpu_with_binding_cap(4096),
        6,
        7,
        33,
        Normalization::RETRIEVAL,
        20,
    );
}

fn quantize_check(ctx: &GpuContext, images: usize, rows: usize, cols: usize, seed: u64) {
    let mut x = random(images * rows * cols, seed);
    x.iter_mut().step_by(5).for_each(|v| *v = 0.0);
    let f = GpuFeatures::new(ctx, images, rows, cols, "f").unwrap();
    ctx.queue
        .write_buffer(&f.buffer, 0, bytemuck::cast_slice(&x));
    let k = QuantizeKernel::new(ctx).unwrap();
    for q in [Quantization::Sign2, Quantization::Bits1] {
        let out = k.output(ctx, &f, q).unwrap();
        ctx.submit("t", |enc| k.record(ctx, enc, &f, q, &out))
            .unwrap();
        let got = out.download(ctx).unwrap();
        let want = reference::quantize(&x, cols, q);
        assert_eq!(got.len(), images * rows * q.words_per_row(cols));
        assert_eq!(got, want, "{q:?}");
        assert!(got.iter().any(|&w| w != 0));
    }
}

#[test]
fn quantization_rows_not_a_multiple_of_a_word() {
    quantize_check(gpu(), 3, 4, 37, 30);
    quantize_check(gpu(), 1, 2, 64, 31);
}

#[test]
fn quantization_chunked_under_small_binding_cap() {
    quantize_check(&gpu_with_binding_cap(2048), 9, 3, 50, 32);
}

#[test]
fn sum_and_max_pooling_over_a_spatial_pyramid() {
    let ctx = gpu();
    let s = Shape4::new(2, 9, 7, 70);
    let x = relu_like(s.len(), 40);
    let regions = pyramid_regions(s.h, s.w, 2).unwrap();
    let gx = GpuTensor::upload(ctx, &x, s, "x").unwrap();
    let k = RegionPoolKernel::new(ctx).unwrap();
    let cells = GpuRegions::upload(ctx, &regions).unwrap();
    for mode in [RegionPoolMode::Sum, RegionPoolMode::Max] {
        let out = GpuFeatures::new(ctx, s.n, regions.len(), s.c, "pooled").unwrap();
        ctx.submit("t", |enc| k.record(ctx, enc, &gx, &cells, mode, &out))
            .unwrap();
        let got = out.download(ctx).unwrap();
        let want = reference::region_pool(&x, s, &regions, mode);
        match mode {
            RegionPoolMode::Max => assert_eq!(got, want),
            RegionPoolMode::Sum => {
                // Inputs are non-negative, so the magnitude is the sum itself.
                let r = Reduced {
                    magnitude: want.clone(),
                    values: want,
                };
                assert_reduction_close(&got, &r, s.h * s.w, "sum pyramid");
            }
        }
    }
}
