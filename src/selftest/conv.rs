//! Every convolution tile, in f32 and in each f16 storage pair, against the reference on the
//! shapes of tests/conv.rs and tests/f16.rs that break tiling and splitting.

use super::{Emit, Options, Row};
use crate::gpu::{Conv2dKernel, ConvTile, Dtype, GpuContext, GpuConv2d, GpuTensor};
use crate::reference::compare::{
    as_read_from_f16, seeded_values, within_sum_bound, Accumulation, Rounding,
};
use crate::reference::{self, Reduced};
use crate::shape::{Conv2dSpec, Shape4, Window2d};
use crate::weights::Conv2dWeights;
use crate::Result;

/// One convolution to check: its input and layer.
struct Case {
    input: Shape4,
    spec: Conv2dSpec,
}

impl Case {
    fn new(
        input: (usize, usize, usize, usize),
        out_c: usize,
        window: Window2d,
        relu: bool,
    ) -> Self {
        Case {
            input: Shape4::new(input.0, input.1, input.2, input.3),
            spec: Conv2dSpec {
                in_c: input.3,
                out_c,
                window,
                relu,
            },
        }
    }

    /// `2x13x11x3 3x3/s1/p1 -> 64 relu`.
    fn describe(&self) -> String {
        let (s, w) = (self.input, self.spec.window);
        let geometry = if (w.kh, w.stride_h, w.pad_h) == (w.kw, w.stride_w, w.pad_w) {
            format!("{}x{}/s{}/p{}", w.kh, w.kw, w.stride_h, w.pad_h)
        } else {
            format!(
                "{}x{}/s{},{}/p{},{}",
                w.kh, w.kw, w.stride_h, w.stride_w, w.pad_h, w.pad_w
            )
        };
        format!(
            "{}x{}x{}x{} {geometry}->{}{}",
            s.n,
            s.h,
            s.w,
            s.c,
            self.spec.out_c,
            if self.spec.relu { " relu" } else { "" }
        )
    }
}

/// The shapes: the RGB first layer (K = 27, the whole-K tile), 17 and 513 channels (K not a
/// multiple of any slice), 5x5 stride 2, AlexNet's 11x11 stride 4, asymmetric windows, and
/// VGG16's conv5 at batch 2 (full tiles, and K split 16 ways as the size rule does there).
fn cases(quick: bool) -> Vec<Case> {
    let sq = Window2d::square;
    let mut c = vec![
        Case::new((2, 13, 11, 3), 64, sq(3, 1, 1), true),
        Case::new((2, 5, 7, 513), 17, sq(3, 1, 1), false),
        Case::new((2, 15, 12, 17), 33, sq(5, 2, 2), false),
    ];
    if !quick {
        let asymmetric = Window2d {
            kh: 3,
            kw: 5,
            stride_h: 2,
            stride_w: 1,
            pad_h: 0,
            pad_w: 2,
        };
        c.extend([
            Case::new((2, 7, 9, 17), 64, sq(1, 1, 0), false),
            Case::new((3, 9, 10, 64), 17, sq(3, 1, 1), true),
            Case::new((1, 6, 5, 5), 513, sq(3, 1, 1), true),
            Case::new((2, 67, 63, 3), 64, sq(11, 4, 2), true),
            Case::new((2, 4, 3, 8), 9, sq(1, 1, 1), false),
            Case::new((2, 11, 9, 7), 19, asymmetric, true),
            Case::new((2, 14, 14, 512), 512, sq(3, 1, 1), true),
        ]);
    }
    c
}

/// Every tile a device may run a layer of `spec` with (the conv family's list), K split 16
/// ways only in the full set.
fn tiles(spec: &Conv2dSpec, quick: bool) -> Vec<ConvTile> {
    ConvTile::every_scalar(spec.k_total())
        .into_iter()
        .filter(|t| !(quick && *t == ConvTile::SplitK(16)))
        .collect()
}

/// He-scaled weights (activations keep a realistic magnitude), rounded by `round`.
fn layer(spec: Conv2dSpec, seed: u64, round: fn(f32) -> f32) -> Result<Conv2dWeights> {
    let scale = (2.0 / spec.k_total() as f32).sqrt();
    let w = seeded_values(spec.weight_len(), seed)
        .iter()
        .map(|v| round(v * scale))
        .collect();
    Conv2dWeights::new(spec, w, seeded_values(spec.out_c, seed + 1))
}

/// Runs `tile` on the uploaded layer and input, storing the output as `out`.
fn run_tile(
    ctx: &GpuContext,
    tile: ConvTile,
    layer: &GpuConv2d,
    input: &GpuTensor,
    out: Dtype,
) -> Result<Vec<f32>> {
    let kernel = Conv2dKernel::with_tile(ctx, Some(tile))?;
    kernel.run_as(ctx, layer, input, out)?.download(ctx)
}

/// The storage pairs with f16 weights: each that the network runs (f32 image in, f16 between
/// layers, f32 out to the features), and f16 -> f16 alone when quick.
fn f16_pairs(quick: bool) -> Vec<(Dtype, Dtype)> {
    if quick {
        vec![(Dtype::F16, Dtype::F16)]
    } else {
        vec![
            (Dtype::F32, Dtype::F16),
            (Dtype::F16, Dtype::F16),
            (Dtype::F16, Dtype::F32),
            (Dtype::F32, Dtype::F32),
        ]
    }
}

fn precision(input: Dtype, output: Dtype) -> String {
    let name = |d: Dtype| if d == Dtype::F16 { "f16" } else { "f32" };
    format!("f16 ({}->{})", name(input), name(output))
}

/// Residual blocks' convolutions (ResNet's strided 1x1 shortcut and strided 3x3, odd channels)
/// with a shortcut added in the epilogue, held to the reference with it.
fn residual_cases() -> Vec<Case> {
    let sq = Window2d::square;
    vec![
        Case::new((2, 9, 8, 64), 256, sq(1, 2, 0), false),
        Case::new((1, 11, 6, 33), 40, sq(3, 2, 1), true),
    ]
}

/// Runs `tile` with the `shortcut` (f32) added, storing the output as `out`.
fn run_tile_residual(
    ctx: &GpuContext,
    tile: ConvTile,
    layer: &GpuConv2d,
    (input, shortcut): (&GpuTensor, &GpuTensor),
    out: Dtype,
) -> Result<Vec<f32>> {
    let kernel = Conv2dKernel::with_tile(ctx, Some(tile))?;
    let output = GpuTensor::with_dtype(ctx, shortcut.shape, out, "selftest residual output")?;
    ctx.submit("selftest: residual conv", |enc| {
        kernel.record_residual(ctx, enc, layer, (input, Some(shortcut), &output), None)
    })?;
    output.download(ctx)
}

/// Every tile with a shortcut: f32, and f16 weights and activations (with cooperative
/// matrices where the device has them) with the f32 shortcut the network keeps.
fn check_residual(ctx: &GpuContext, opts: Options, emit: &mut Emit) {
    for (i, case) in residual_cases().into_iter().enumerate() {
        let seed = 300 + 10 * i as u64;
        let shape = format!("{} + shortcut", case.describe());
        let terms = case.spec.k_total() + 2;
        let mut precisions = vec![(Dtype::F32, std::convert::identity as fn(f32) -> f32)];
        if ctx.has_f16() {
            precisions.push((Dtype::F16, as_read_from_f16));
        }
        for (dtype, round) in precisions {
            let prepared = (|| -> Result<_> {
                let w = layer(case.spec, seed, round)?;
                let x: Vec<f32> = seeded_values(case.input.len(), seed + 2)
                    .into_iter()
                    .map(round)
                    .collect();
                let out = case.spec.output_shape(case.input)?;
                let s = seeded_values(out.len(), seed + 3);
                let (_, want) = reference::conv2d_add(&x, case.input, &w, Some((out, &s)))?;
                let gl = GpuConv2d::upload_as(ctx, &w, dtype)?;
                let gx = GpuTensor::upload_as(ctx, &x, case.input, dtype, "selftest input")?;
                let gs = GpuTensor::upload(ctx, &s, out, "selftest shortcut")?;
                Ok((want, gl, gx, gs))
            })();
            let mut all: Vec<(ConvTile, Accumulation)> = tiles(&case.spec, opts.quick)
                .into_iter()
                .map(|t| (t, Accumulation::Nearest))
                .collect();
            if dtype == Dtype::F16 && ctx.cooperative_matrix {
                all.push((ConvTile::Coop, Accumulation::Truncating));
            }
            let (p, rounding) = match dtype {
                Dtype::F32 => ("f32".to_string(), Rounding::F32),
                Dtype::F16 => (precision(Dtype::F16, Dtype::F16), Rounding::F16),
            };
            for (tile, accumulation) in all {
                let t0 = std::time::Instant::now();
                let name = format!("conv {} residual", tile.name());
                let outcome = match &prepared {
                    Ok((want, gl, gx, gs)) => run_tile_residual(ctx, tile, gl, (gx, gs), dtype)
                        .map(|got| within_sum_bound(&got, want, terms, rounding, accumulation)),
                    Err(e) => Err(crate::Error::Config(format!("preparing the check: {e}"))),
                };
                emit(Row::of((&name, &shape, &p), t0, outcome));
            }
        }
    }
}

pub(super) fn check(ctx: &GpuContext, opts: Options, emit: &mut Emit) {
    check_residual(ctx, opts, emit);
    let f16 = ctx.has_f16();
    let coop = ctx.cooperative_matrix;
    if !f16 {
        emit(Row::unavailable(
            "conv (every tile)",
            "f16",
            "the adapter lacks shader-f16",
        ));
    }
    if !coop {
        emit(Row::unavailable(
            "conv coop",
            "f16",
            "no cooperative matrices in 16x16x16 f16 x f16 -> f32 with subgroups of 32 (or CROSSPOOL_NO_COOPERATIVE_MATRIX=1)",
        ));
    }
    for (i, case) in cases(opts.quick).into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let shape = case.describe();
        let terms = case.spec.k_total() + 1;
        // f32: the reference on the same f32 values.
        let prepared = (|| -> Result<_> {
            let w = layer(case.spec, seed, |v| v)?;
            let x = seeded_values(case.input.len(), seed + 2);
            let (_, want) = reference::conv2d(&x, case.input, &w)?;
            let gl = GpuConv2d::upload(ctx, &w)?;
            let gx = GpuTensor::upload(ctx, &x, case.input, "selftest conv input")?;
            Ok((want, gl, gx))
        })();
        for tile in tiles(&case.spec, opts.quick) {
            let t0 = std::time::Instant::now();
            let name = format!("conv {}", tile.name());
            let outcome = match &prepared {
                Ok((want, gl, gx)) => run_tile(ctx, tile, gl, gx, Dtype::F32).map(|got| {
                    within_sum_bound(&got, want, terms, Rounding::F32, Accumulation::Nearest)
                }),
                Err(e) => Err(crate::Error::Config(format!("preparing the check: {e}"))),
            };
            emit(Row::of((&name, &shape, "f32"), t0, outcome));
        }
        if f16 {
            check_f16(ctx, opts, &case, seed, coop, emit);
        }
    }
}

/// The f16 storage pairs of one case, every tile and (where the device has them) cooperative
/// matrices, against the reference on the f16-rounded values the GPU reads.
fn check_f16(ctx: &GpuContext, opts: Options, case: &Case, seed: u64, coop: bool, emit: &mut Emit) {
    let shape = case.describe();
    let terms = case.spec.k_total() + 1;
    let prepared = (|| -> Result<(Reduced, GpuConv2d, Vec<f32>)> {
        let w = layer(case.spec, seed, as_read_from_f16)?;
        let x: Vec<f32> = seeded_values(case.input.len(), seed + 2)
            .into_iter()
            .map(as_read_from_f16)
            .collect();
        let (_, want) = reference::conv2d(&x, case.input, &w)?;
        Ok((want, GpuConv2d::upload_as(ctx, &w, Dtype::F16)?, x))
    })();
    for (input, output) in f16_pairs(opts.quick) {
        let rounding = if output == Dtype::F16 {
            Rounding::F16
        } else {
            Rounding::F32
        };
        let p = precision(input, output);
        let gx = match &prepared {
            Ok((_, _, x)) => GpuTensor::upload_as(ctx, x, case.input, input, "selftest input"),
            Err(e) => Err(crate::Error::Config(format!("preparing the check: {e}"))),
        };
        let mut all: Vec<(ConvTile, Accumulation)> = tiles(&case.spec, opts.quick)
            .into_iter()
            .map(|t| (t, Accumulation::Nearest))
            .collect();
        if coop {
            // Tensor cores may truncate their f32 sums: the bound for truncation.
            all.push((ConvTile::Coop, Accumulation::Truncating));
        }
        for (tile, accumulation) in all {
            let t0 = std::time::Instant::now();
            let name = format!("conv {}", tile.name());
            let outcome = match (&prepared, &gx) {
                (Ok((want, gl, _)), Ok(gx)) => run_tile(ctx, tile, gl, gx, output)
                    .map(|got| within_sum_bound(&got, want, terms, rounding, accumulation)),
                (Err(e), _) | (_, Err(e)) => Err(crate::Error::Config(e.to_string())),
            };
            emit(Row::of((&name, &shape, &p), t0, outcome));
        }
    }
}
