//! Criterion benchmark of the convolution kernel on VGG16 layer shapes.
//!
//! Throughput is reported in elements/s where one element is one floating-point operation, so
//! criterion's "Gelem/s" reads as GFLOP/s. The group name carries the adapter's name.
//! On a CPU (software) adapter the input is 64x64 instead of 224x224 and the batch is 1, so the
//! run stays in minutes; the shapes are labelled with what actually ran.
//! `CROSSPOOL_BENCH_INPUT` and `CROSSPOOL_BENCH_BATCH` override both.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use crosspool::gpu::{Conv2dKernel, GpuContext, GpuConv2d, GpuOptions, GpuTensor};
use crosspool::shape::{Conv2dSpec, Shape4, Window2d};
use crosspool::weights::Conv2dWeights;

/// (name, input channels, output channels, spatial divisor of the network input).
const VGG16_LAYERS: &[(&str, usize, usize, usize)] = &[
    ("conv1_2", 64, 64, 1),
    ("conv2_2", 128, 128, 2),
    ("conv3_2", 256, 256, 4),
    ("conv4_2", 512, 512, 8),
    ("conv5_2", 512, 512, 16),
];

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn bench_conv(c: &mut Criterion) {
    let opts = GpuOptions::from_env().expect("CROSSPOOL_BACKEND / CROSSPOOL_ADAPTER");
    let ctx = GpuContext::new(&opts).expect("the benchmark needs a GPU adapter");
    eprintln!("adapter: {}", ctx.describe());
    let software = ctx.info.device_type == wgpu::DeviceType::Cpu;
    let input = env_usize("CROSSPOOL_BENCH_INPUT").unwrap_or(if software { 64 } else { 224 });
    let batch = env_usize("CROSSPOOL_BENCH_BATCH").unwrap_or(if software { 1 } else { 8 });
    let kernel = Conv2dKernel::new(&ctx).expect("compile conv2d");
    let mut group = c.benchmark_group(format!("conv2d/{}", ctx.info.name));
    group.sample_size(10);
    if software {
        // Iterations take ~100 ms there; flat sampling keeps 10 samples within the target time.
        group.sampling_mode(SamplingMode::Flat);
        group.measurement_time(std::time::Duration::from_secs(8));
    }
    for &(name, in_c, out_c, div) in VGG16_LAYERS {
        let hw = (input / div).max(1);
        let spec = Conv2dSpec {
            in_c,
            out_c,
            window: Window2d::square(3, 1, 1),
            relu: true,
        };
        let shape = Shape4::new(batch, hw, hw, in_c);
        let weights = Conv2dWeights::new(
            spec,
            (0..spec.weight_len())
                .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
                .collect(),
            vec![0.1; out_c],
        )
        .expect("weights");
        let layer = GpuConv2d::upload(&ctx, &weights).expect("upload weights");
        let x: Vec<f32> = (0..shape.len())
            .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
            .collect();
        let gx = GpuTensor::upload(&ctx, &x, shape, "input").expect("upload input");
        let out = spec.output_shape(shape).expect("shape");
        let gy = GpuTensor::new(&ctx, out, "output").expect("output");
        let flops = spec.flops(shape).expect("flops");
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(
            format!("{name} {hw}x{hw}x{in_c}->{out_c} batch {batch}"),
            |b| {
                b.iter(|| {
                    ctx.submit("bench", |enc| {
                        kernel.record(&ctx, enc, &layer, (&gx, &gy), None)
                    })
                    .expect("conv");
                    ctx.wait("bench").expect("wait");
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
