//! GPU convolution against the CPU reference on shapes chosen to break tiling and splitting.

mod common;

use common::{assert_reduction_close, conv, gpu, gpu_with_binding_cap, random};
use crosspool::gpu::conv::WHOLE_K_MAX;
use crosspool::gpu::plan::{plan_row_bands, BandLimits};
use crosspool::gpu::{Conv2dKernel, ConvTile, GpuContext, GpuConv2d, GpuTensor};
use crosspool::reference;
use crosspool::shape::{Conv2dSpec, Shape4, Window2d};
use crosspool::weights::Conv2dWeights;

fn layer(spec: Conv2dSpec, seed: u64) -> Conv2dWeights {
    // Weights scaled like He initialisation so activations keep a realistic magnitude.
    let scale = (2.0 / spec.k_total() as f32).sqrt();
    let w = random(spec.weight_len(), seed)
        .iter()
        .map(|v| v * scale)
        .collect();
    Conv2dWeights::new(spec, w, random(spec.out_c, seed + 1)).unwrap()
}

/// Holds every tile configuration of the kernel to the reference on this shape.
fn check_on(ctx: &GpuContext, input_shape: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    let w = layer(spec, seed);
    let x = random(input_shape.len(), seed + 2);
    let (out_shape, want) = reference::conv2d(&x, input_shape, &w).unwrap();
    let gl = GpuConv2d::upload(ctx, &w).unwrap();
    let gx = GpuTensor::upload(ctx, &x, input_shape, "input").unwrap();
    // Every scalar tile that takes this layer (whole-K only where K fits it).
    for tile in ConvTile::every_scalar(spec.k_total()) {
        let kernel = Conv2dKernel::with_tile(ctx, Some(tile)).unwrap();
        let gy = kernel.run(ctx, &gl, &gx).unwrap();
        assert_eq!(gy.shape, out_shape);
        let got = gy.download(ctx).unwrap();
        assert_reduction_close(
            &got,
            &want,
            spec.k_total() + 1,
            &format!("{what}, {tile:?}"),
        );
    }
}

fn check(input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    check_on(gpu(), input, spec, seed, what);
}

#[test]
fn one_by_one_batch_two_odd_size() {
    check(
        Shape4::new(2, 7, 9, 17),
        conv(17, 64, Window2d::square(1, 1, 0), false),
        1,
        "1x1 17->64",
    );
}

#[test]
fn three_by_three_rgb_input() {
    check(
        Shape4::new(1, 13, 11, 3),
        conv(3, 64, Window2d::square(3, 1, 1), true),
        2,
        "3x3 3->64 relu",
    );
}

#[test]
fn three_by_three_batch_three() {
    check(
        Shape4::new(3, 9, 10, 64),
        conv(64, 17, Window2d::square(3, 1, 1), true),
        3,
        "3x3 64->17 batch 3",
    );
}

#[test]
fn five_by_five_stride_two() {
    check(
        Shape4::new(2, 15, 12, 17),
        conv(17, 33, Window2d::square(5, 2, 2), false),
        4,
        "5x5 s2 p2",
    );
}

#[test]
fn eleven_by_eleven_stride_four_pad_two() {
    // AlexNet conv1 geometry at a small odd size: (67 + 4 - 11) / 4 + 1 = 16.
    check(
        Shape4::new(2, 67, 63, 3),
        conv(3, 64, Window2d::square(11, 4, 2), true),
        5,
        "11x11 s4 p2",
    );
}

#[test]
fn wide_input_channels_not_a_multiple_of_the_tile() {
    check(
        Shape4::new(2, 5, 7, 513),
        conv(513, 17, Window2d::square(3, 1, 1), false),
        6,
        "3x3 513->17",
    );
}

#[test]
fn wide_output_channels_not_a_multiple_of_the_tile() {
    check(
        Shape4::new(1, 6, 5, 5),
        conv(5, 513, Window2d::square(3, 1, 1), true),
        7,
        "3x3 5->513",
    );
}

#[test]
fn padding_wider_than_the_kernel_reach() {
    // A 1x1 kernel with padding 1: the border outputs see only padding and equal the bias.
    check(
        Shape4::new(2, 4, 3, 8),
        conv(8, 9, Window2d::square(1, 1, 1), false),
        8,
        "1x1 p1",
    );
}

#[test]
fn asymmetric_kernel_stride_and_padding() {
    let window = Window2d {
        kh: 3,
        kw: 5,
        stride_h: 2,
        stride_w: 1,
        pad_h: 0,
        pad_w: 2,
    };
    check(
        Shape4::new(2, 11, 8, 6),
        conv(6, 10, window, true),
        9,
        "3x5 s(2,1) p(0,2)",
    );
}

#[test]
fn single_output_pixel() {
    check(
        Shape4::new(1, 3, 3, 4),
        conv(4, 3, Window2d::square(3, 1, 0), false),
        10,
        "3x3 valid -> 1x1",
    );
}

/// With a 4 KiB binding cap the input is split into many row bands, some inside one image and
/// some spanning two, with binding offsets that are not aligned to the data.
#[test]
fn split_into_row_bands_under_small_binding_cap() {
    let cap = 4 * 1024;
    let ctx = gpu_with_binding_cap(cap);
    let input = Shape4::new(3, 21, 13, 7);
    let spec = conv(7, 12, Window2d::square(3, 1, 1), true);
    let out = spec.output_shape(input).unwrap();
    let limits = BandLimits {
        binding_cap: cap,
        align: ctx.binding_alignment(),
        max_out_rows: usize::MAX,
    };
    let bands = plan_row_bands("t", input, out, &spec.window, limits).unwrap();
    assert!(bands.len() >= 4, "cap too loose to split: {bands:?}");
    assert!(
        bands.iter().any(|b| b.in_row0 % input.h != 0),
        "no band starts inside an image"
    );
    check_on(&ctx, input, spec, 11, "3x3 banded");
    // Strided windows skip input rows between bands.
    check_on(
        &ctx,
        Shape4::new(2, 30, 17, 5),
        conv(5, 6, Window2d::square(5, 3, 1), false),
        12,
        "5x5 s3 banded",
    );
}

/// An activation larger than 128 MiB, WebGPU's default (and lavapipe's actual) binding limit.
#[test]
fn activation_over_128_mib() {
    let cap = 128 << 20;
    let ctx = gpu_with_binding_cap(cap);
    // One image of 420 x 420 x 192 f32 = 135.5 MB: the split must fall inside the image.
    let input = Shape4::new(1, 420, 420, 192);
    assert!(input.bytes_f32() > cap);
    check_on(
        &ctx,
        input,
        conv(192, 4, Window2d::square(3, 1, 1), true),
        13,
        "over 128 MiB",
    );
}

/// Weights larger than one binding (as for fully connected layers run as convolutions) are
/// split by output channel; each slice writes its channels into the shared output rows.
#[test]
fn weights_split_by_output_channel_under_small_binding_cap() {
    // Slices of 7 channels (fewer than a tile), together with row bands.
    let ctx = gpu_with_binding_cap(4 * 1024);
    let spec = conv(16, 150, Window2d::square(3, 1, 1), true);
    let w = layer(spec, 14);
    assert!(GpuConv2d::upload(&ctx, &w).unwrap().slices() >= 20);
    check_on(&ctx, Shape4::new(2, 5, 6, 16), spec, 14, "7-channel slices");
    // Slices of whole 64-channel tiles plus a ragged one, as fc6 would be split.
    let ctx = gpu_with_binding_cap(64 * 1024);
    let spec = conv(17, 200, Window2d::square(3, 1, 0), false);
    assert_eq!(
        GpuConv2d::upload(&ctx, &layer(spec, 15)).unwrap().slices(),
        4
    );
    check_on(
        &ctx,
        Shape4::new(3, 3, 3, 17),
        spec,
        15,
        "64-channel slices, fc-like 1x1 output",
    );
}

/// A first layer (RGB, K = 27 <= WHOLE_K_MAX, so every tile including the whole-K one runs
/// it) with a stride, padding, two channel tiles and row bands under a small binding cap.
#[test]
fn rgb_first_layer_strided_in_row_bands() {
    let ctx = gpu_with_binding_cap(4 * 1024);
    let spec = conv(3, 70, Window2d::square(3, 2, 1), true);
    assert!(spec.k_total() <= WHOLE_K_MAX as usize);
    check_on(
        &ctx,
        Shape4::new(2, 19, 15, 3),
        spec,
        16,
        "3x3 s2 3->70 banded",
    );
}

/// A residual block's shortcut `s` in every scalar tile's epilogue and in split-K's
/// reduction: with it (and ReLU), each output must be exactly `max((acc + bias) + s, 0)`,
/// where `acc + bias` is what the same tile stores for the same weights without either (the
/// same sums in the same order), so a shortcut read at the wrong pixel, channel, band or slice
/// fails exactly. The reference with the shortcut is held to the sum bound as well.
fn check_residual_on(ctx: &GpuContext, input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    let plain = layer(
        Conv2dSpec {
            relu: false,
            ..spec
        },
        seed,
    );
    let with_relu = Conv2dWeights {
        spec: Conv2dSpec { relu: true, ..spec },
        ..plain.clone()
    };
    let x = random(input.len(), seed + 2);
    let out = spec.output_shape(input).unwrap();
    let s = random(out.len(), seed + 3);
    let (_, want) = reference::conv2d_add(&x, input, &with_relu, Some((out, &s))).unwrap();
    let (gp, gr) = (
        GpuConv2d::upload(ctx, &plain).unwrap(),
        GpuConv2d::upload(ctx, &with_relu).unwrap(),
    );
    let gx = GpuTensor::upload(ctx, &x, input, "input").unwrap();
    let gs = GpuTensor::upload(ctx, &s, out, "shortcut").unwrap();
    let tiles = ConvTile::every_scalar(spec.k_total());
    for tile in tiles.into_iter().chain([ConvTile::SplitK(3)]) {
        let kernel = Conv2dKernel::with_tile(ctx, Some(tile)).unwrap();
        let sums = kernel.run(ctx, &gp, &gx).unwrap().download(ctx).unwrap();
        let gy = GpuTensor::with_dtype(ctx, out, crosspool::gpu::Dtype::F32, "out").unwrap();
        ctx.submit("residual", |enc| {
            kernel.record_residual(ctx, enc, &gr, (&gx, Some(&gs), &gy), None)
        })
        .unwrap();
        let got = gy.download(ctx).unwrap();
        let what = format!("{what}, {tile:?}");
        for (i, ((g, a), b)) in got.iter().zip(&sums).zip(&s).enumerate() {
            assert_eq!(
                g.to_bits(),
                (a + b).max(0.0).to_bits(),
                "{what}: output {i}"
            );
        }
        assert_reduction_close(&got, &want, spec.k_total() + 2, &what);
    }
}

/// ResNet's shapes: a 1x1 on 17 channels, the strided 1x1 downsampling shortcut, a strided
/// 3x3 with odd channels, output channels past one slice's tile; and row bands under a 4 KiB
/// binding cap, where the shortcut's binding window differs from the output's.
#[test]
fn residual_addition_in_every_tile() {
    let ctx = gpu();
    let cases = [
        (
            Shape4::new(2, 7, 9, 17),
            conv(17, 64, Window2d::square(1, 1, 0), true),
            "1x1",
        ),
        (
            Shape4::new(2, 9, 8, 64),
            conv(64, 256, Window2d::square(1, 2, 0), false),
            "1x1 s2",
        ),
        (
            Shape4::new(1, 11, 6, 33),
            conv(33, 40, Window2d::square(3, 2, 1), true),
            "3x3 s2",
        ),
        (
            Shape4::new(1, 4, 5, 8),
            conv(8, 131, Window2d::square(3, 1, 1), true),
            "131 out",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check_residual_on(ctx, input, spec, 40 + seed as u64 * 10, what);
    }
    let banded = gpu_with_binding_cap(4 * 1024);
    check_residual_on(
        &banded,
        Shape4::new(3, 21, 13, 7),
        conv(7, 12, Window2d::square(3, 1, 1), true),
        90,
        "3x3 banded",
    );
}
