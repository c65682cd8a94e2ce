//! The kernels besides convolution, on the shapes of tests/pool.rs, tests/relu.rs,
//! tests/pooling.rs and tests/retrieval.rs: max pooling and ReLU (exact), region and field
//! pooling, cross-layer pooling, normalisation, PCA projection, quantisation and scoring.

use super::{Emit, Options, Row};
use crate::gpu::{
    Conv2dKernel, CrossLayerKernel, Dtype, GpuContext, GpuConv2d, GpuDatabase, GpuFeatures,
    GpuRegions, GpuTensor, MaxPool2dKernel, NormalizeKernel, QuantizeKernel, RegionPoolKernel,
    ReluKernel, ScoreKernel, ScoreKind,
};
use crate::pca::{MomentAccumulator, Pca};
use crate::pooling::{
    pyramid_regions, ChannelPooling, CrossLayer, Guide, LocalWindow, Normalization, Quantization,
    RegionPoolMode,
};
use crate::reference::compare::{
    as_read_from_f16, bit_exact, roots_within_sum_bound, seeded_values, values_equal,
    within_relative, within_sum_bound, words_equal, Accumulation, Agreement, Rounding,
};
use crate::reference::{self, f32_dot_error_bound, Reduced};
use crate::retrieval::score::{score_codes, score_floats, select_channels};
use crate::shape::{MaxPool2dSpec, Shape4, Window2d};
use crate::Result;

fn dims(s: Shape4) -> String {
    format!("{}x{}x{}x{}", s.n, s.h, s.w, s.c)
}

/// Runs `f` and emits its row.
fn row(emit: &mut Emit, what: (&str, &str, &str), f: impl FnOnce() -> Result<Agreement>) {
    let t0 = std::time::Instant::now();
    emit(Row::of(what, t0, f()));
}

/// Activations like a ReLU layer's: about half zeros, the rest positive.
fn relu_like(len: usize, seed: u64) -> Vec<f32> {
    seeded_values(len, seed)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect()
}

/// Max pooling (f32, and f16 storage where the device has it), ReLU, region pooling and
/// FC-Conv's field pooling.
pub(super) fn check_maps(ctx: &GpuContext, opts: Options, emit: &mut Emit) {
    let pools = [
        (Shape4::new(2, 7, 9, 64), Window2d::square(2, 2, 0)),
        (Shape4::new(3, 13, 13, 17), Window2d::square(3, 2, 0)),
        (
            Shape4::new(1, 9, 6, 513),
            Window2d {
                kh: 3,
                kw: 2,
                stride_h: 2,
                stride_w: 1,
                pad_h: 1,
                pad_w: 0,
            },
        ),
    ];
    let mut storage = vec![(Dtype::F32, Dtype::F32, "f32")];
    if ctx.has_f16() {
        storage.push((Dtype::F16, Dtype::F16, "f16 (f16->f16)"));
        if !opts.quick {
            storage.push((Dtype::F16, Dtype::F32, "f16 (f16->f32)"));
        }
    } else {
        emit(Row::unavailable(
            "max pool",
            "f16",
            "the adapter lacks shader-f16",
        ));
    }
    for (i, (shape, window)) in pools.into_iter().enumerate() {
        if opts.quick && i == 2 {
            break;
        }
        let w = window;
        let what = format!(
            "{} {}x{}/s{},{}/p{},{}",
            dims(shape),
            w.kh,
            w.kw,
            w.stride_h,
            w.stride_w,
            w.pad_h,
            w.pad_w
        );
        for &(input, output, precision) in &storage {
            row(emit, ("max pool", &what, precision), || {
                let spec = MaxPool2dSpec { window };
                // f16-exact values, so that every storage pair has the same reference.
                let x: Vec<f32> = seeded_values(shape.len(), 1 + i as u64)
                    .into_iter()
                    .map(as_read_from_f16)
                    .collect();
                let (out_shape, want) = reference::max_pool2d(&x, shape, spec)?;
                let kernel = MaxPool2dKernel::new(ctx)?;
                let gx = GpuTensor::upload_as(ctx, &x, shape, input, "selftest pool input")?;
                let gy = GpuTensor::with_dtype(ctx, out_shape, output, "selftest pooled")?;
                ctx.submit("selftest: max pool", |enc| {
                    kernel.record(ctx, enc, spec, &gx, &gy)
                })?;
                Ok(bit_exact(&gy.download(ctx)?, &want, false))
            });
        }
    }

    // ReLU: exact, save that a GPU may flush a subnormal to zero.
    let relu_cases: Vec<(String, Vec<f32>)> = vec![
        ("3x5x7x17".into(), seeded_values(3 * 5 * 7 * 17, 7)),
        (
            "-0, 1, inf, 1e-40, max, NaN, ...".into(),
            vec![
                -0.0,
                0.0,
                -1.0,
                1.0,
                f32::NEG_INFINITY,
                f32::INFINITY,
                -1e-40,
                1e-40,
                f32::MIN,
                f32::MAX,
                f32::NAN,
            ],
        ),
    ];
    for (what, x) in relu_cases {
        row(emit, ("relu", &what, "f32"), || {
            let want = reference::relu(&x);
            let t = GpuTensor::upload(ctx, &x, Shape4::new(1, 1, 1, x.len()), "selftest relu")?;
            ReluKernel::new(ctx)?.run(ctx, &t)?;
            Ok(bit_exact(&t.download(ctx)?, &want, true))
        });
    }

    // Sum and max pooling over a 0-2 spatial pyramid (the baselines).
    let s = Shape4::new(2, 9, 7, 70);
    for mode in [RegionPoolMode::Sum, RegionPoolMode::Max] {
        let name = match mode {
            RegionPoolMode::Sum => "region pool sum",
            RegionPoolMode::Max => "region pool max",
        };
        row(
            emit,
            (name, &format!("{} pyramid 0-2", dims(s)), "f32"),
            || {
                let x = relu_like(s.len(), 40);
                let regions = pyramid_regions(s.h, s.w, 2)?;
                let gx = GpuTensor::upload(ctx, &x, s, "selftest x")?;
                let k = RegionPoolKernel::new(ctx)?;
                let cells = GpuRegions::upload(ctx, &regions)?;
                let out = GpuFeatures::new(ctx, s.n, regions.len(), s.c, "selftest pooled")?;
                ctx.submit("selftest: region pool", |enc| {
                    k.record(ctx, enc, &gx, &cells, mode, &out)
                })?;
                let got = out.download(ctx)?;
                let want = reference::region_pool(&x, s, &regions, mode);
                Ok(match mode {
                    RegionPoolMode::Max => bit_exact(&got, &want, false),
                    // Inputs are non-negative, so the magnitude is the sum itself.
                    RegionPoolMode::Sum => within_sum_bound(
                        &got,
                        &Reduced {
                            magnitude: want.clone(),
                            values: want,
                        },
                        s.h * s.w,
                        Rounding::F32,
                        Accumulation::Nearest,
                    ),
                })
            },
        );
    }

    // FC-Conv's field pooling: VGG16's fc6 fields on an odd conv5_3 map, and hand-made ones.
    let mut fields = vec![(
        Shape4::new(2, 5, 4, 3),
        vec![[0, 1, 0, 1], [1, 4, 2, 3], [0, 5, 0, 4], [4, 5, 3, 4]],
        (1, 4),
        "hand-made fields",
    )];
    if !opts.quick {
        if let Ok(f) =
            crate::model::Arch::Vgg16.receptive_fields("conv5_3", "fc6", (17, 16), (2, 2))
        {
            fields.push((Shape4::new(3, 17, 16, 19), f, (2, 2), "vgg16 fc6 fields"));
        }
    }
    for (s, boxes, out_hw, what) in fields {
        row(
            emit,
            ("field pool", &format!("{} {what}", dims(s)), "f32"),
            || {
                // Signed inputs: the square root must keep the sign of the sum.
                let x = seeded_values(s.len(), 60);
                let gx = GpuTensor::upload(ctx, &x, s, "selftest x")?;
                let cells = GpuRegions::upload(ctx, &boxes)?;
                let out = GpuTensor::new(
                    ctx,
                    Shape4::new(s.n, out_hw.0, out_hw.1, s.c),
                    "selftest fields",
                )?;
                let k = RegionPoolKernel::new(ctx)?;
                ctx.submit("selftest: field pool", |enc| {
                    k.record_fields(ctx, enc, &gx, &cells, &out)
                })?;
                let (_, sums) = reference::field_pool(&x, s, &boxes);
                let terms = boxes
                    .iter()
                    .map(|f| ((f[1] - f[0]) * (f[3] - f[2])) as usize)
                    .max()
                    .unwrap_or(1);
                Ok(roots_within_sum_bound(&out.download(ctx)?, &sums, terms))
            },
        );
    }
}

/// Cross-layer pooling (sums and maxima), normalisation, PCA projection, quantisation and
/// retrieval scores.
pub(super) fn check_features(ctx: &GpuContext, opts: Options, emit: &mut Emit) {
    let unit = LocalWindow::UNIT;
    let w33 = LocalWindow::new(3, 3).ok();
    // (layer t+1, its window, layer t, its window, images per group)
    let mut cross = vec![(
        Shape4::new(3, 5, 7, 70),
        unit,
        Shape4::new(3, 5, 7, 17),
        unit,
        1,
    )];
    if let Some(w33) = w33 {
        cross.push((
            Shape4::new(2, 6, 5, 65),
            unit,
            Shape4::new(2, 6, 5, 9),
            w33,
            1,
        ));
    }
    if !opts.quick {
        if let Ok(w31) = LocalWindow::new(3, 1) {
            // The batch as one group with A = X: the second moment PCA is fitted on.
            let s = Shape4::new(4, 4, 3, 20);
            cross.push((s, w31, s, w31, 4));
        }
    }
    for (i, (a_shape, a_win, x_shape, x_win, group)) in cross.into_iter().enumerate() {
        let what = format!(
            "{}x{} {} x {} ({x_win}){}",
            x_shape.h,
            x_shape.w,
            a_shape.c,
            x_shape.c,
            if group > 1 { " moments" } else { "" }
        );
        row(emit, ("cross-layer sum", &what, "f32"), || {
            let seed = 20 + 2 * i as u64;
            let x = relu_like(x_shape.len(), seed);
            // The moments case pools X with itself.
            let a = if group > 1 {
                x.clone()
            } else {
                relu_like(a_shape.len(), seed + 1)
            };
            let want = reference::cross_layer(
                &a,
                a_shape,
                a_win,
                &x,
                x_shape,
                x_win,
                group,
                ChannelPooling::Sum,
            )?;
            let gx = GpuTensor::upload(ctx, &x, x_shape, "selftest x")?;
            let ga = GpuTensor::upload(ctx, &a, a_shape, "selftest a")?;
            let (rows, cols) = (a_win.feature_len(a_shape.c), x_win.feature_len(x_shape.c));
            let out = GpuFeatures::new(ctx, x_shape.n / group, rows, cols, "selftest p")?;
            let k = CrossLayerKernel::new(ctx)?;
            // Twice, the second accumulating (as PCA's moments do over batches): the result
            // is twice the sum, and halving it is exact.
            for accumulate in [false, true] {
                ctx.submit("selftest: cross-layer pooling", |enc| {
                    let op = CrossLayer::new(Guide::Layer(&ga, a_win), &gx, x_win).grouped(group);
                    k.record(ctx, enc, op, &out, accumulate)
                })?;
            }
            let got: Vec<f32> = out.download(ctx)?.iter().map(|v| v / 2.0).collect();
            let terms = group * x_shape.h * x_shape.w + 1;
            Ok(within_sum_bound(
                &got,
                &want,
                terms,
                Rounding::F32,
                Accumulation::Nearest,
            ))
        });
    }

    // Max channel pooling: each product rounded once, and rounding is monotonic, so the
    // maximum equals the reference's bit for bit. Signed guides (fc8 has no ReLU), three
    // units (fewer than one staged step), 70 x 67 across the 64 x 64 output tile.
    row(
        emit,
        ("cross-layer max", "1x3 70 x 67 signed guide", "f32"),
        || {
            let (a_shape, x_shape) = (Shape4::new(2, 1, 3, 70), Shape4::new(2, 1, 3, 67));
            let x = relu_like(x_shape.len(), 50);
            let a = seeded_values(a_shape.len(), 51);
            let max = ChannelPooling::Max;
            let want = reference::cross_layer(&a, a_shape, unit, &x, x_shape, unit, 1, max)?;
            let gx = GpuTensor::upload(ctx, &x, x_shape, "selftest x")?;
            let ga = GpuTensor::upload(ctx, &a, a_shape, "selftest a")?;
            let out = GpuFeatures::new(ctx, 2, a_shape.c, x_shape.c, "selftest p")?;
            let k = CrossLayerKernel::new(ctx)?;
            ctx.submit("selftest: max channel pooling", |enc| {
                let op = CrossLayer::new(Guide::Layer(&ga, unit), &gx, unit).pooled(max);
                k.record(ctx, enc, op, &out, false)
            })?;
            Ok(values_equal(&out.download(ctx)?, &want.values))
        },
    );

    // Normalisation: every combination (two when quick), with an all-zero row and image.
    let (images, rows, cols) = (3, 5, 300);
    for flags in 0..8u32 {
        let norm = Normalization {
            channel_l2: flags & 1 != 0,
            signed_sqrt: flags & 2 != 0,
            global_l2: flags & 4 != 0,
        };
        if opts.quick && norm != Normalization::PAPER && norm != Normalization::RETRIEVAL {
            continue;
        }
        let what = format!(
            "{images}x{rows}x{cols}{}{}{}{}",
            if flags == 0 { " none" } else { "" },
            if norm.channel_l2 { " channel-l2" } else { "" },
            if norm.signed_sqrt { " sqrt" } else { "" },
            if norm.global_l2 { " global-l2" } else { "" }
        );
        row(emit, ("normalize", &what, "f32"), || {
            let mut x = seeded_values(images * rows * cols, 10 + flags as u64);
            x[cols..2 * cols].iter_mut().for_each(|v| *v = 0.0);
            x[rows * cols..2 * rows * cols]
                .iter_mut()
                .for_each(|v| *v = 0.0);
            let mut want = x.clone();
            reference::normalize(&mut want, rows, cols, norm);
            let f = GpuFeatures::new(ctx, images, rows, cols, "selftest f")?;
            ctx.queue
                .write_buffer(&f.buffer, 0, bytemuck::cast_slice(&x));
            let k = NormalizeKernel::new(ctx)?;
            ctx.submit("selftest: normalize", |enc| k.record(ctx, enc, &f, norm))?;
            // Each value is scaled by norms from f32 sums of `cols` and `rows` terms
            // (relative error at most gamma_n each); a square root halves a relative error.
            let rel = f32_dot_error_bound(cols) as f64
                + f32_dot_error_bound(rows) as f64
                + 4.0 * f32::EPSILON as f64;
            Ok(within_relative(&f.download(ctx)?, &want, rel))
        });
    }

    // PCA projection: a fitted PCA as the 1x1 convolution the extractor runs.
    row(emit, ("pca projection", "2x5x7x64 -> 24", "f32"), || {
        let (feat, units) = (64, 300);
        let samples = seeded_values(feat * units, 70);
        let mut m = MomentAccumulator::new(feat);
        let mut sum = vec![0.0f32; feat];
        let mut second = vec![0.0f32; feat * feat];
        for u in samples.chunks(feat) {
            for (i, &a) in u.iter().enumerate() {
                sum[i] += a;
                for (j, &b) in u.iter().enumerate() {
                    second[i * feat + j] += a * b;
                }
            }
        }
        m.add(&sum, &second, units as u64);
        let pca = Pca::fit(&m, "vgg16", "conv5_2", LocalWindow::UNIT, feat, Some(24))?;
        let w = pca.to_conv()?;
        let s = Shape4::new(2, 5, 7, feat);
        let x = relu_like(s.len(), 71);
        let (_, want) = reference::conv2d(&x, s, &w)?;
        let gx = GpuTensor::upload(ctx, &x, s, "selftest x")?;
        let got = Conv2dKernel::new(ctx)?
            .run(ctx, &GpuConv2d::upload(ctx, &w)?, &gx)?
            .download(ctx)?;
        Ok(within_sum_bound(
            &got,
            &want,
            feat + 1,
            Rounding::F32,
            Accumulation::Nearest,
        ))
    });

    // Sign codes: rows that end mid-word, exact zeros for 2-bit codes' third state.
    let (images, rows, cols) = (3, 4, 37);
    for q in [Quantization::Sign2, Quantization::Bits1] {
        row(
            emit,
            ("quantize", &format!("{images}x{rows}x{cols} {q:?}"), "f32"),
            || {
                let mut x = seeded_values(images * rows * cols, 30);
                x.iter_mut().step_by(5).for_each(|v| *v = 0.0);
                let f = GpuFeatures::new(ctx, images, rows, cols, "selftest f")?;
                ctx.queue
                    .write_buffer(&f.buffer, 0, bytemuck::cast_slice(&x));
                let k = QuantizeKernel::new(ctx)?;
                let out = k.output(ctx, &f, q)?;
                ctx.submit("selftest: quantize", |enc| k.record(ctx, enc, &f, q, &out))?;
                Ok(words_equal(
                    &out.download(ctx)?,
                    &reference::quantize(&x, cols, q),
                ))
            },
        );
    }

    check_scores(ctx, emit);
}

/// Random features with exact zeros mixed in (so that 2-bit codes see all three signs).
fn features_with_zeros(n: usize, seed: u64) -> Vec<f32> {
    seeded_values(n, seed)
        .into_iter()
        .map(|v| if v.abs() < 0.1 { 0.0 } else { v })
        .collect()
}

/// Per-query selections of `ksel` of `rows` channels.
fn selections(queries: usize, rows: usize, ksel: usize, seed: u64) -> Vec<u32> {
    (0..queries)
        .flat_map(|q| select_channels(&seeded_values(rows, seed + q as u64), Some(ksel)))
        .collect()
}

/// Eq. 3 scores: integer scores of codes exactly; float scores within the f32 bound of their
/// `ksel * cols` products. 131 images (not a multiple of the 64-image workgroup), 45 columns
/// (rows end mid-word).
fn check_scores(ctx: &GpuContext, emit: &mut Emit) {
    let (nq, images, rows, cols, ksel) = (3, 131, 37, 45, 5);
    for q in [Quantization::Bits1, Quantization::Sign2] {
        let what = format!("{nq} queries x {images} x {rows}x{cols} k={ksel} {q:?}");
        row(emit, ("score codes", &what, "u32"), || {
            let wpr = q.words_per_row(cols);
            let encode = |n: usize, seed: u64| -> Vec<u32> {
                features_with_zeros(n * rows * cols, seed)
                    .chunks(rows * cols)
                    .flat_map(|img| reference::quantize(img, cols, q))
                    .collect()
            };
            let (db, queries) = (encode(images, 11), encode(nq, 12));
            let sel = selections(nq, rows, ksel, 13);
            let gdb = GpuDatabase::from_words(ctx, ScoreKind::Codes(q), rows, wpr, cols, &db)?;
            let got = ScoreKernel::new(ctx)?.score(ctx, &gdb, &queries, &sel, ksel)?;
            let want: Vec<f32> = (0..nq)
                .flat_map(|qi| {
                    let query = &queries[qi * rows * wpr..(qi + 1) * rows * wpr];
                    let s = &sel[qi * ksel..(qi + 1) * ksel];
                    score_codes(query, &db, rows, wpr, s, q, cols)
                })
                .collect();
            Ok(bit_exact(&got, &want, false))
        });
    }
    let (nq, images, rows, cols, ksel) = (2, 77, 9, 13, 4);
    let what = format!("{nq} queries x {images} x {rows}x{cols} k={ksel}");
    row(emit, ("score floats", &what, "f32"), || {
        let db = features_with_zeros(images * rows * cols, 21);
        let queries = features_with_zeros(nq * rows * cols, 22);
        let sel = selections(nq, rows, ksel, 23);
        let gdb = GpuDatabase::from_words(
            ctx,
            ScoreKind::Floats,
            rows,
            cols,
            cols,
            bytemuck::cast_slice(&db),
        )?;
        let got =
            ScoreKernel::new(ctx)?.score(ctx, &gdb, bytemuck::cast_slice(&queries), &sel, ksel)?;
        let mut want = Reduced {
            values: Vec::new(),
            magnitude: Vec::new(),
        };
        for qi in 0..nq {
            let s = &sel[qi * ksel..(qi + 1) * ksel];
            let query = &queries[qi * rows * cols..(qi + 1) * rows * cols];
            want.values.extend(score_floats(query, &db, rows, cols, s));
            for img in db.chunks(rows * cols) {
                let m: f64 = s
                    .iter()
                    .flat_map(|&k| {
                        let r = k as usize * cols..(k as usize + 1) * cols;
                        query[r.clone()]
                            .iter()
                            .zip(&img[r])
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    })
                    .sum();
                want.magnitude.push(m as f32);
            }
        }
        Ok(within_sum_bound(
            &got,
            &want,
            ksel * cols,
            Rounding::F32,
            Accumulation::Nearest,
        ))
    });
}
