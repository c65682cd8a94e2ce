//! The CPU backend's convolution against the CPU reference, on the shapes the GPU kernel is
//! tested on (odd sizes, 3/17/513 channels, strides, padding wider than the kernel, batches)
//! and on shapes that split into several im2col bands, with the same f32 rounding bound.

mod common;

use common::{assert_reduction_close, random};
use crosspool::cpu::CpuConv2d;
use crosspool::reference;
use crosspool::shape::{Conv2dSpec, Shape4, Window2d};
use crosspool::weights::Conv2dWeights;

fn check(input: Shape4, spec: Conv2dSpec, seed: u64, what: &str) {
    let scale = (2.0 / spec.k_total() as f32).sqrt();
    let w: Vec<f32> = random(spec.weight_len(), seed)
        .iter()
        .map(|v| v * scale)
        .collect();
    let w = Conv2dWeights::new(spec, w, random(spec.out_c, seed + 1)).unwrap();
    let x = random(input.len(), seed + 2);
    let (out_shape, want) = reference::conv2d(&x, input, &w).unwrap();
    let layer = CpuConv2d::new(&w);
    let mut got = vec![f32::NAN; out_shape.len()];
    assert_eq!(layer.run(&x, input, &mut got).unwrap(), out_shape);
    assert_reduction_close(&got, &want, spec.k_total() + 1, what);
}

fn conv(in_c: usize, out_c: usize, window: Window2d, relu: bool) -> Conv2dSpec {
    Conv2dSpec {
        in_c,
        out_c,
        window,
        relu,
    }
}

#[test]
fn kernels_strides_and_padding() {
    let cases = [
        (
            Shape4::new(2, 7, 9, 17),
            conv(17, 64, Window2d::square(1, 1, 0), false),
            "1x1",
        ),
        (
            Shape4::new(1, 13, 11, 3),
            conv(3, 64, Window2d::square(3, 1, 1), true),
            "3x3 rgb",
        ),
        (
            Shape4::new(3, 9, 10, 64),
            conv(64, 17, Window2d::square(3, 1, 1), true),
            "batch 3",
        ),
        (
            Shape4::new(2, 15, 12, 17),
            conv(17, 33, Window2d::square(5, 2, 2), false),
            "5x5 s2",
        ),
        (
            Shape4::new(2, 67, 63, 3),
            conv(3, 64, Window2d::square(11, 4, 2), true),
            "11x11 s4",
        ),
        (
            Shape4::new(2, 5, 7, 513),
            conv(513, 17, Window2d::square(3, 1, 1), false),
            "513 in",
        ),
        (
            Shape4::new(1, 6, 5, 5),
            conv(5, 513, Window2d::square(3, 1, 1), true),
            "513 out",
        ),
        (
            Shape4::new(1, 4, 3, 7),
            conv(7, 9, Window2d::square(3, 1, 3), false),
            "pad 3",
        ),
        (
            Shape4::new(1, 1, 1, 1),
            conv(1, 1, Window2d::square(1, 1, 0), false),
            "1x1x1",
        ),
    ];
    for (seed, (input, spec, what)) in cases.into_iter().enumerate() {
        check(input, spec, seed as u64 * 10, what);
    }
}

#[test]
fn several_im2col_bands() {
    // 64 channels x 9 taps = 576 values a row: a 1 Mi-value band holds 1820 rows, so 2 x 40 x
    // 41 = 3280 output pixels take two bands, the second partial, and bands cross images.
    check(
        Shape4::new(2, 40, 41, 64),
        conv(64, 32, Window2d::square(3, 1, 1), true),
        100,
        "two bands",
    );
}

#[test]
fn wrong_buffer_sizes_are_errors() {
    let spec = conv(3, 4, Window2d::square(3, 1, 1), false);
    let w = Conv2dWeights::new(spec, random(spec.weight_len(), 1), random(4, 2)).unwrap();
    let layer = CpuConv2d::new(&w);
    let shape = Shape4::new(1, 5, 5, 3);
    let x = random(shape.len(), 3);
    let mut short = vec![0.0; 5 * 5 * 4 - 1];
    assert!(layer.run(&x, shape, &mut short).is_err());
    let mut y = vec![0.0; 5 * 5 * 4];
    assert!(layer.run(&x[1..], shape, &mut y).is_err());
    assert!(layer.run(&x, Shape4::new(1, 5, 5, 2), &mut y).is_err());
}
