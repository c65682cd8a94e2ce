//! GPU max pooling against the CPU reference. Max is exact, so results must match bit for bit.

mod common;

use common::{gpu, gpu_with_binding_cap, random};
use crosspool::gpu::{GpuContext, GpuTensor, MaxPool2dKernel};
use crosspool::reference;
use crosspool::shape::{MaxPool2dSpec, Shape4, Window2d};

fn check_on(ctx: &GpuContext, shape: Shape4, window: Window2d, x: &[f32], what: &str) {
    let spec = MaxPool2dSpec { window };
    let (out_shape, want) = reference::max_pool2d(x, shape, spec).unwrap();
    let kernel = MaxPool2dKernel::new(ctx).unwrap();
    let gx = GpuTensor::upload(ctx, x, shape, "input").unwrap();
    let gy = kernel.run(ctx, spec, &gx).unwrap();
    assert_eq!(gy.shape, out_shape, "{what}");
    let got = gy.download(ctx).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: gpu {g} vs reference {w}"
        );
    }
}

fn check(shape: Shape4, window: Window2d, seed: u64, what: &str) {
    check_on(gpu(), shape, window, &random(shape.len(), seed), what);
}

#[test]
fn vgg_two_by_two_on_odd_sizes_drops_the_last_row_and_column() {
    check(
        Shape4::new(2, 7, 9, 64),
        Window2d::square(2, 2, 0),
        1,
        "2x2 s2 on 7x9",
    );
}

#[test]
fn alexnet_three_by_three_stride_two() {
    check(
        Shape4::new(3, 13, 13, 17),
        Window2d::square(3, 2, 0),
        2,
        "3x3 s2",
    );
}

#[test]
fn padded_windows_ignore_padding() {
    // All-negative input: a padded position counted as 0 would win and show up.
    let shape = Shape4::new(2, 6, 5, 3);
    let x: Vec<f32> = random(shape.len(), 3)
        .iter()
        .map(|v| -1.0 - v.abs())
        .collect();
    check_on(
        gpu(),
        shape,
        Window2d::square(3, 1, 1),
        &x,
        "3x3 s1 p1 negative input",
    );
}

#[test]
fn asymmetric_window_and_many_channels() {
    let w = Window2d {
        kh: 3,
        kw: 2,
        stride_h: 2,
        stride_w: 1,
        pad_h: 1,
        pad_w: 0,
    };
    check(
        Shape4::new(1, 9, 6, 513),
        w,
        4,
        "3x2 s(2,1) p(1,0) 513 channels",
    );
}

#[test]
fn infinities_pass_through() {
    let shape = Shape4::new(1, 4, 4, 2);
    let mut x = random(shape.len(), 5);
    x.iter_mut().step_by(3).for_each(|v| *v = f32::NEG_INFINITY);
    x[0] = f32::INFINITY;
    check_on(gpu(), shape, Window2d::square(2, 2, 0), &x, "infinities");
}

#[test]
fn split_into_row_bands_under_small_binding_cap() {
    let ctx = gpu_with_binding_cap(2048);
    let shape = Shape4::new(3, 17, 11, 5);
    check_on(
        &ctx,
        shape,
        Window2d::square(3, 2, 1),
        &random(shape.len(), 6),
        "banded 3x3 s2 p1",
    );
    check_on(
        &ctx,
        shape,
        Window2d::square(2, 2, 0),
        &random(shape.len(), 7),
        "banded 2x2 s2",
    );
}

#[test]
fn activation_over_128_mib() {
    let cap = 128 << 20;
    let ctx = gpu_with_binding_cap(cap);
    // 3 images of 256 x 240 x 200 f32 = 147 MB in all.
    let shape = Shape4::new(3, 256, 240, 200);
    assert!(shape.bytes_f32() > cap);
    check_on(
        &ctx,
        shape,
        Window2d::square(2, 2, 0),
        &random(shape.len(), 8),
        "over 128 MiB",
    );
}
