//! f16 storage on the GPU (`--precision f16`): the convolution variants that read and write
//! f16 with f16 weights, and max pooling in f16, held to the CPU reference on the same
//! f16-rounded values; overflow past f16's range flagged per image.
//!
//! The bound. The reference gets exactly the values the GPU reads (inputs and weights rounded
//! to f16 on the host, subnormals flushed to zero so that a GPU that flushes them reads the
//! same), so what differs is
//! - the f32 sum, as in every f32 test: `gamma_n * sum |w x|` plus half an f32 ulp of the
//!   reference's own rounding (`assert_reduction_close`);
//! - for an f16 output, its rounding to f16: WGSL lets a conversion take either neighbour, so
//!   up to one f16 ulp, at most `2^-10 |y|` for a normal value, and a result below f16's
//!   smallest normal 2^-14 may be flushed to zero: `2^-10 |y| + 2^-14` in all.

mod common;

use common::{conv, gpu, gpu_with_binding_cap, random};
use crosspool::gpu::{
    Conv2dKernel, ConvTile, Dtype, GpuContext, GpuConv2d, GpuTensor, MaxPool2dKernel, F16_MAX,
};
use crosspool::reference::compare::{within_sum_bound, Accumulation, Rounding};
use crosspool::reference::{self, Reduced};
use crosspool::shape::{Conv2dSpec, MaxPool2dSpec, Shape4, Window2d};
use crosspool::weights::Conv2dWeights;

/// `v` as the GPU reads it after an f16 upload: rounded to nearest, subnormals flushed.
fn as_f16(v: f32) -> f32 {
    crosspool::reference::compare::as_read_from_f16(v)
}

fn round_all(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| as_f16(x)).collect()
}

/// He-scaled weights, already rounded to f16 (so the reference sees the GPU's weights).
fn layer(spec: Conv2dSpec, seed: u64) -> Conv2dWeights {
    let scale = (2.0 / spec.k_total() as f32).sqrt();
    let w = random(spec.weight_len(), seed)
        .iter()
        .map(|v| as_f16(v * scale))
        .collect();
    Conv2dWeights::new(spec, w, random(spec.out_c, seed + 1)).unwrap()
}

/// The f32 bound of `assert_reduction_close`, plus, for f16 outputs, one f16 ulp or a flush.
fn assert_close(got: &[f32], want: &Reduced, terms: usize, out: Dtype, what: &str) {
    let rounding = match out {
        Dtype::F32 => Rounding::F32,
        Dtype::F16 => Rounding::F16,
    };
    let a = within_sum_bound(got, want, terms, rounding, Accumulation::Nearest);
    if let Some(why) = &a.failure {
        panic!("{what}: {why}");
    }
    eprintln!(
        "{what}: {} outputs, worst error {:.3} of the bound",
        got.len(),
        a.worst
    );
}

/// Every (input, output) storage pair with f16 weights, both tiles, against the reference.
fn check_on(ctx: &GpuContext, input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    assert!(ctx.has_f16(), "the test adapter lacks shader-f16");
    let w = layer(spec, seed);
    let x = round_all(&random(input.len(), seed + 2));
    let (out_shape, want) = reference::conv2d(&x, input, &w).unwrap();
    let gl = GpuConv2d::upload_as(ctx, &w, Dtype::F16).unwrap();
    for in_t in [Dtype::F32, Dtype::F16] {
        let gx = GpuTensor::upload_as(ctx, &x, input, in_t, "input").unwrap();
        for out_t in [Dtype::F32, Dtype::F16] {
            // Every scalar tile that takes this layer, and K split an odd number of ways.
            let tiles = ConvTile::every_scalar(spec.k_total());
            for tile in tiles.into_iter().chain([ConvTile::SplitK(3)]) {
                let kernel = Conv2dKernel::with_tile(ctx, Some(tile)).unwrap();
                let gy = kernel.run_as(ctx, &gl, &gx, out_t).unwrap();
                assert_eq!((gy.shape, gy.dtype), (out_shape, out_t));
                let got = gy.download(ctx).unwrap();
                let name = format!("{what}, {in_t:?} -> {out_t:?}, {tile:?}");
                assert_close(&got, &want, spec.k_total() + 1, out_t, &name);
            }
        }
    }
}

#[test]
fn first_layer_shape_rgb_odd_size() {
    check_on(
        gpu(),
        Shape4::new(2, 13, 11, 3),
        conv(3, 64, Window2d::square(3, 1, 1), true),
        1,
        "3x3 3->64 relu",
    );
}

#[test]
fn odd_channels_and_an_odd_count_of_halves() {
    // 17 channels of 7 x 9 pixels: an odd number of f16 values, so the last 4-byte word of
    // the buffers holds one value and padding.
    check_on(
        gpu(),
        Shape4::new(1, 7, 9, 17),
        conv(17, 33, Window2d::square(1, 1, 0), false),
        2,
        "1x1 17->33",
    );
}

#[test]
fn wide_input_channels_strided() {
    check_on(
        gpu(),
        Shape4::new(1, 9, 8, 513),
        conv(513, 70, Window2d::square(3, 2, 1), true),
        3,
        "3x3 s2 513->70",
    );
}

#[test]
fn large_tile_shape_batch_three() {
    check_on(
        gpu(),
        Shape4::new(3, 12, 11, 64),
        conv(64, 130, Window2d::square(3, 1, 1), true),
        4,
        "3x3 64->130",
    );
}

/// Row bands whose binding offsets fall inside f16 data (2-byte elements) and split images.
#[test]
fn row_bands_under_a_small_binding_cap() {
    let ctx = gpu_with_binding_cap(4 * 1024);
    check_on(
        &ctx,
        Shape4::new(3, 21, 13, 7),
        conv(7, 12, Window2d::square(3, 1, 1), true),
        5,
        "3x3 banded",
    );
    check_on(
        &ctx,
        Shape4::new(2, 30, 17, 5),
        conv(5, 6, Window2d::square(5, 3, 1), false),
        6,
        "5x5 s3 banded",
    );
}

/// Weights split by output channel, stored as f16.
#[test]
fn weights_split_by_output_channel() {
    let ctx = gpu_with_binding_cap(4 * 1024);
    let spec = conv(16, 150, Window2d::square(3, 1, 1), true);
    assert!(
        GpuConv2d::upload_as(&ctx, &layer(spec, 7), Dtype::F16)
            .unwrap()
            .slices()
            >= 10
    );
    check_on(&ctx, Shape4::new(2, 5, 6, 16), spec, 7, "f16 weight slices");
}

/// Max pooling in every storage pair: a maximum of f16 values is exact, so bit for bit.
#[test]
fn max_pool_in_f16_is_exact() {
    let ctx = gpu();
    let shape = Shape4::new(2, 13, 11, 19);
    let x = round_all(&random(shape.len(), 8));
    let spec = MaxPool2dSpec {
        window: Window2d::square(3, 2, 1),
    };
    let (out_shape, want) = reference::max_pool2d(&x, shape, spec).unwrap();
    let kernel = MaxPool2dKernel::new(ctx).unwrap();
    for in_t in [Dtype::F32, Dtype::F16] {
        for out_t in [Dtype::F32, Dtype::F16] {
            let gx = GpuTensor::upload_as(ctx, &x, shape, in_t, "input").unwrap();
            let gy = GpuTensor::with_dtype(ctx, out_shape, out_t, "pooled").unwrap();
            ctx.submit("pool", |enc| kernel.record(ctx, enc, spec, &gx, &gy))
                .unwrap();
            assert_eq!(gy.download(ctx).unwrap(), want, "{in_t:?} -> {out_t:?}");
        }
    }
}

/// An image whose activations pass 65504 is flagged, and only that image; in f32 weights the
/// same values are no overflow.
#[test]
fn overflow_past_f16_range_is_flagged_per_image() {
    let ctx = gpu();
    let input = Shape4::new(3, 6, 5, 3);
    let spec = conv(3, 8, Window2d::square(3, 1, 1), false);
    let w = layer(spec, 9);
    // Image 1 is scaled so that its outputs reach some 10^6; images 0 and 2 stay near 1.
    let mut x = round_all(&random(input.len(), 10));
    let per = input.len() / input.n;
    x[per..2 * per].iter_mut().for_each(|v| *v *= 1.0e6);
    let gx = GpuTensor::upload(ctx, &x, input, "input").unwrap();
    let kernel = Conv2dKernel::new(ctx).unwrap();
    for (weights, out_t, want) in [
        (Dtype::F16, Dtype::F16, vec![0, 1, 0]),
        (Dtype::F16, Dtype::F32, vec![0, 1, 0]),
        (Dtype::F32, Dtype::F32, vec![0, 0, 0]),
    ] {
        let gl = GpuConv2d::upload_as(ctx, &w, weights).unwrap();
        let out = spec.output_shape(input).unwrap();
        let gy = GpuTensor::with_dtype(ctx, out, out_t, "out").unwrap();
        let flags = ctx.storage_buffer(4 * input.n as u64, "flags").unwrap();
        ctx.submit("conv", |enc| {
            kernel.record(ctx, enc, &gl, (&gx, &gy), Some(&flags))
        })
        .unwrap();
        let got: Vec<u32> = GpuTensor::view(&flags, Shape4::new(input.n, 1, 1, 1), Dtype::F32)
            .download(ctx)
            .unwrap()
            .iter()
            .map(|v| u32::from(v.to_bits() != 0))
            .collect();
        assert_eq!(got, want, "weights {weights:?}, output {out_t:?}");
        // The flagged image's outputs do pass the range; the others' do not.
        let y = gy.download(ctx).unwrap();
        let per_out = out.len() / out.n;
        let big = |n: usize| {
            y[n * per_out..(n + 1) * per_out]
                .iter()
                .any(|v| v.abs() > F16_MAX)
        };
        if out_t == Dtype::F32 {
            assert_eq!((big(0), big(1), big(2)), (false, true, false));
        }
    }
}
