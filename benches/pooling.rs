//! Criterion benchmarks of the pooling-stage kernels on the shapes of VGG16's conv5 pair:
//! cross-layer pooling, normalisation, 2-bit quantisation and max pooling. Throughput is in
//! elements = floating-point operations (cross-layer) or values processed (the others).
//! On a software adapter the batch is 1; `CROSSPOOL_BENCH_BATCH` overrides it.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crosspool::gpu::{
    CrossLayerKernel, GpuContext, GpuFeatures, GpuOptions, GpuTensor, MaxPool2dKernel,
    NormalizeKernel, QuantizeKernel,
};
use crosspool::pooling::{CrossLayer, Guide, LocalWindow, Normalization, Quantization};
use crosspool::shape::{MaxPool2dSpec, Shape4, Window2d};

fn bench_pooling(c: &mut Criterion) {
    let ctx = GpuContext::new(&GpuOptions::from_env().expect("CROSSPOOL_BACKEND"))
        .expect("the benchmark needs a GPU adapter");
    eprintln!("adapter: {}", ctx.describe());
    let software = ctx.info.device_type == wgpu::DeviceType::Cpu;
    let n = std::env::var("CROSSPOOL_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if software { 1 } else { 8 });
    // conv5_2 / conv5_3 of VGG16 at 224 (14x14x512) and at 448 (28x28x512).
    let mut group = c.benchmark_group(format!("pooling/{}", ctx.info.name));
    group.sample_size(10);
    for hw in [14usize, 28] {
        let s = Shape4::new(n, hw, hw, 512);
        let x: Vec<f32> = (0..s.len())
            .map(|i| ((i % 17) as f32 - 5.0).max(0.0))
            .collect();
        let gx = GpuTensor::upload(&ctx, &x, s, "x").unwrap();
        let ga = GpuTensor::upload(&ctx, &x, s, "a").unwrap();
        let feats = GpuFeatures::new(&ctx, n, 512, 512, "p").unwrap();
        let cross = CrossLayerKernel::new(&ctx).unwrap();
        group.throughput(Throughput::Elements((2 * n * hw * hw * 512 * 512) as u64));
        group.bench_function(format!("cross-layer {hw}x{hw}x512 batch {n}"), |b| {
            b.iter(|| {
                ctx.submit("b", |enc| {
                    cross.record(
                        &ctx,
                        enc,
                        CrossLayer::new(
                            Guide::Layer(&ga, LocalWindow::UNIT),
                            &gx,
                            LocalWindow::UNIT,
                        ),
                        &feats,
                        false,
                    )
                })
                .unwrap();
                ctx.wait("b").unwrap();
            })
        });
        if hw == 14 {
            let norm = NormalizeKernel::new(&ctx).unwrap();
            group.throughput(Throughput::Elements((n * 512 * 512) as u64));
            group.bench_function(format!("normalize 512x512 batch {n}"), |b| {
                b.iter(|| {
                    ctx.submit("b", |enc| {
                        norm.record(&ctx, enc, &feats, Normalization::RETRIEVAL)
                    })
                    .unwrap();
                    ctx.wait("b").unwrap();
                })
            });
            let q = QuantizeKernel::new(&ctx).unwrap();
            let packed = q.output(&ctx, &feats, Quantization::Sign2).unwrap();
            group.bench_function(format!("quantize sign2 512x512 batch {n}"), |b| {
                b.iter(|| {
                    ctx.submit("b", |enc| {
                        q.record(&ctx, enc, &feats, Quantization::Sign2, &packed)
                    })
                    .unwrap();
                    ctx.wait("b").unwrap();
                })
            });
        }
        let pool = MaxPool2dKernel::new(&ctx).unwrap();
        let spec = MaxPool2dSpec {
            window: Window2d::square(2, 2, 0),
        };
        let out = GpuTensor::new(&ctx, spec.output_shape(s).unwrap(), "pooled").unwrap();
        group.throughput(Throughput::Elements(s.len() as u64));
        group.bench_function(format!("max-pool 2x2 {hw}x{hw}x512 batch {n}"), |b| {
            b.iter(|| {
                ctx.submit("b", |enc| pool.record(&ctx, enc, spec, &gx, &out))
                    .unwrap();
                ctx.wait("b").unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pooling);
criterion_main!(benches);
