//! Cross-layer pooling, normalisation, quantisation and baseline pooling kernels against the
//! CPU reference.

mod common;

use common::{assert_reduction_close, gpu, gpu_with_binding_cap, random};
use crosspool::gpu::{
    CrossLayerKernel, GpuContext, GpuFeatures, GpuRegions, GpuTensor, NormalizeKernel,
    QuantizeKernel, RegionPoolKernel,
};
use crosspool::pooling::{
    pyramid_regions, ChannelPooling, CrossLayer, Guide, LocalWindow, Normalization, Quantization,
    RegionPoolMode,
};
use crosspool::reference::compare::roots_within_sum_bound;
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
            reference::cross_layer(
                &a,
                a_shape,
                w,
                &x,
                x_shape,
                x_win,
                group,
                ChannelPooling::Sum,
            )
            .unwrap(),
            w.feature_len(a_shape.c),
        ),
        None => {
            // Ones: the reference is the cross-layer sum with a 1-channel map of ones.
            let ones = vec![1.0; x_shape.n * x_shape.h * x_shape.w];
            let s1 = Shape4::new(x_shape.n, x_shape.h, x_shape.w, 1);
            (
                reference::cross_layer(
                    &ones,
                    s1,
                    LocalWindow::UNIT,
                    &x,
                    x_shape,
                    x_win,
                    group,
                    ChannelPooling::Sum,
                )
                .unwrap(),
                1,
            )
        }
    };
    let guidance = match a_win {
        Some(w) => Guide::Layer(&ga, w),
        None => Guide::Ones,
    };
    let cols = x_win.feature_len(x_shape.c);
    let out = GpuFeatures::new(ctx, x_shape.n / group, rows, cols, "p").unwrap();
    let k = CrossLayerKernel::new(ctx).unwrap();
    // Twice, the second accumulating: the result must be twice the sum.
    for acc in [false, true] {
        ctx.submit("t", |enc| {
            k.record(
                ctx,
                enc,
                CrossLayer::new(guidance, &gx, x_win)
                    .grouped(group)
                    .pooled(ChannelPooling::Sum),
                &out,
                acc,
            )
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
        let want = reference::cross_layer(&x, s, w, &x, s, w, group, ChannelPooling::Sum).unwrap();
        let f = w.feature_len(s.c);
        let out = GpuFeatures::new(ctx, s.n / group, f, f, "m2").unwrap();
        ctx.submit("t", |enc| {
            k.record(
                ctx,
                enc,
                CrossLayer::new(Guide::Layer(&gx, w), &gx, w)
                    .grouped(group)
                    .pooled(ChannelPooling::Sum),
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

/// Max channel pooling on the GPU against the reference. Each f32 product is rounded once and
/// rounding is monotonic, so the maximum of the rounded products is the reference's maximum
/// (exact products in f64) rounded once: the two are equal, bit for bit. The guide has both
/// signs (fc8 has no ReLU), so rows whose every product is negative test that staged units
/// past a group's end (zeros) stay out of the maximum.
#[allow(clippy::too_many_arguments)]
fn max_cross_on(
    ctx: &GpuContext,
    a_shape: Shape4,
    x_shape: Shape4,
    x_win: LocalWindow,
    group: usize,
    seed: u64,
    all_negative_rows: bool,
    what: &str,
) {
    let x = relu_like(x_shape.len(), seed);
    let a = random(a_shape.len(), seed + 1);
    let gx = GpuTensor::upload(ctx, &x, x_shape, "x").unwrap();
    let ga = GpuTensor::upload(ctx, &a, a_shape, "a").unwrap();
    let unit = LocalWindow::UNIT;
    let max = ChannelPooling::Max;
    let want = reference::cross_layer(&a, a_shape, unit, &x, x_shape, x_win, group, max)
        .unwrap()
        .values;
    let (rows, cols) = (a_shape.c, x_win.feature_len(x_shape.c));
    let out = GpuFeatures::new(ctx, x_shape.n / group, rows, cols, "p").unwrap();
    let k = CrossLayerKernel::new(ctx).unwrap();
    let guidance = Guide::Layer(&ga, unit);
    ctx.submit("t", |enc| {
        k.record(
            ctx,
            enc,
            CrossLayer::new(guidance, &gx, x_win)
                .grouped(group)
                .pooled(max),
            &out,
            false,
        )
    })
    .unwrap();
    let got = out.download(ctx).unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // Bit for bit, except that a GPU may flush subnormal products to zero.
        assert!(
            g == w || (g - w).abs() < f32::MIN_POSITIVE,
            "{what}: element {i}: gpu {g} vs reference {w}"
        );
    }
    let negative = want.iter().filter(|&&v| v < 0.0).count();
    let positive = want.iter().filter(|&&v| v > 0.0).count();
    assert!(
        positive > 0 && (negative > 0 || !all_negative_rows),
        "{what}: {negative} negative and {positive} positive maxima: the case tests too little"
    );
    eprintln!("{what}: {} maxima equal, {negative} negative", want.len());
    // Accumulating into an earlier result has no meaning for a maximum.
    let e = ctx.submit("t", |enc| {
        k.record(
            ctx,
            enc,
            CrossLayer::new(guidance, &gx, x_win)
                .grouped(group)
                .pooled(max),
            &out,
            true,
        )
    });
    assert!(e.is_err(), "{what}: max accepted accumulate");
}

#[test]
fn max_channel_pooling_equals_the_reference() {
    let ctx = gpu();
    // Three units per image: fewer than one staged step (16), and rows of all-negative
    // products; 70 x 67 crosses the 64 x 64 output tile on both sides.
    max_cross_on(
        ctx,
        Shape4::new(2, 1, 3, 70),
        Shape4::new(2, 1, 3, 67),
        LocalWindow::UNIT,
        1,
        50,
        true,
        "max, 3 units",
    );
    // 35 units (two full steps and a partial one) with 3x3 local features (zero taps
    // outside the map), and groups of two images.
    max_cross_on(
        ctx,
        Shape4::new(4, 5, 7, 17),
        Shape4::new(4, 5, 7, 5),
        LocalWindow::new(3, 3).unwrap(),
        2,
        51,
        false,
        "max, 3x3 window, groups of 2",
    );
    // Split into image chunks by a small binding cap.
    max_cross_on(
        &gpu_with_binding_cap(8 * 1024),
        Shape4::new(7, 3, 5, 24),
        Shape4::new(7, 3, 5, 19),
        LocalWindow::UNIT,
        1,
        52,
        false,
        "max, chunked",
    );
}

/// FC-Conv's local features on the GPU: the signed square root of sums over receptive fields,
/// compared through the square against the sums (`compare::roots_within_sum_bound` derives
/// the bound).
#[test]
fn field_pooling_equals_the_reference() {
    let ctx = gpu();
    let k = RegionPoolKernel::new(ctx).unwrap();
    let arch_fields = crosspool::model::Arch::Vgg16
        .receptive_fields("conv5_3", "fc6", (17, 16), (2, 2))
        .unwrap();
    // Overlapping fields of VGG16's fc6 on an odd conv5_3 map, and hand-made ones down to
    // one unit, on channels that are not a multiple of anything.
    let hand = vec![[0, 1, 0, 1], [1, 4, 2, 3], [0, 5, 0, 4], [4, 5, 3, 4]];
    for (s, fields, out_hw, what) in [
        (
            Shape4::new(3, 17, 16, 19),
            arch_fields,
            (2, 2),
            "vgg16 fc6 fields",
        ),
        (Shape4::new(2, 5, 4, 3), hand, (1, 4), "hand-made fields"),
    ] {
        // Signed inputs: the square root must keep the sign of the sum.
        let x = random(s.len(), 60);
        let gx = GpuTensor::upload(ctx, &x, s, "x").unwrap();
        let cells = GpuRegions::upload(ctx, &fields).unwrap();
        let out_shape = Shape4::new(s.n, out_hw.0, out_hw.1, s.c);
        let out = GpuTensor::new(ctx, out_shape, "fields").unwrap();
        ctx.submit("t", |enc| k.record_fields(ctx, enc, &gx, &cells, &out))
            .unwrap();
        let got = out.download(ctx).unwrap();
        let (rooted, sums) = reference::field_pool(&x, s, &fields);
        assert_eq!(got.len(), rooted.len(), "{what}: length");
        let terms = fields
            .iter()
            .map(|f| ((f[1] - f[0]) * (f[3] - f[2])) as usize)
            .max()
            .unwrap();
        let a = roots_within_sum_bound(&got, &sums, terms);
        assert!(a.passed(), "{what}: {:?}", a.failure);
        assert!(
            got.iter().any(|&v| v < 0.0) && got.iter().any(|&v| v > 0.0),
            "{what}: both signs expected"
        );
    }
    // A map that does not fit the fields is refused.
    let s = Shape4::new(1, 4, 4, 2);
    let gx = GpuTensor::upload(ctx, &random(s.len(), 1), s, "x").unwrap();
    let cells = GpuRegions::upload(ctx, &[[0, 2, 0, 2]]).unwrap();
    let wrong = GpuTensor::new(ctx, Shape4::new(1, 2, 1, 2), "o").unwrap();
    assert!(ctx
        .submit("t", |enc| k.record_fields(ctx, enc, &gx, &cells, &wrong))
        .is_err());
}
