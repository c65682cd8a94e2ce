//! GPU ReLU against the CPU reference: exact.

mod common;

use common::{gpu, gpu_with_binding_cap, random};
use crosspool::gpu::{GpuContext, GpuTensor, ReluKernel};
use crosspool::reference;
use crosspool::shape::Shape4;

fn check_on(ctx: &GpuContext, shape: Shape4, x: &[f32], what: &str) {
    let want = reference::relu(x);
    let t = GpuTensor::upload(ctx, x, shape, "relu").unwrap();
    ReluKernel::new(ctx).unwrap().run(ctx, &t).unwrap();
    let got = t.download(ctx).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // WGSL lets a GPU flush subnormals to zero (NVIDIA does), so a positive subnormal may
        // come back as +0.0; every other value must match bit for bit.
        let flushed = w.is_subnormal() && g.to_bits() == 0;
        assert!(
            g.to_bits() == w.to_bits() || flushed,
            "{what}: element {i}: input {}, gpu {g}, reference {w}",
            x[i]
        );
    }
    assert!(
        x.iter().any(|&v| v < 0.0) && want.iter().any(|&v| v > 0.0),
        "{what}: input must mix signs"
    );
}

#[test]
fn odd_sized_batch() {
    let shape = Shape4::new(3, 5, 7, 17);
    check_on(gpu(), shape, &random(shape.len(), 1), "odd batch");
}

#[test]
fn special_values() {
    let x = [
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
    ];
    check_on(gpu(), Shape4::new(1, 1, 1, x.len()), &x, "special values");
}

#[test]
fn chunks_with_misaligned_starts_under_small_binding_cap() {
    let ctx = gpu_with_binding_cap(1000);
    let shape = Shape4::new(1, 1, 1, 1234);
    check_on(&ctx, shape, &random(shape.len(), 2), "chunked");
}

#[test]
fn activation_over_128_mib() {
    let cap = 128 << 20;
    let ctx = gpu_with_binding_cap(cap);
    let shape = Shape4::new(5, 112, 112, 600);
    assert!(shape.bytes_f32() > cap);
    check_on(&ctx, shape, &random(shape.len(), 3), "over 128 MiB");
}
