//! Criterion benchmark of the CPU backend's convolution (im2col + GEMM) on VGG16 layer
//! shapes at 224x224, batch 1 (`CROSSPOOL_BENCH_INPUT`, `CROSSPOOL_BENCH_BATCH` override),
//! on all of rayon's threads. One element is one floating-point operation, so "Gelem/s"
//! reads as GFLOP/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crosspool::cpu::CpuConv2d;
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

fn bench_cpu_conv(c: &mut Criterion) {
    let input = env_usize("CROSSPOOL_BENCH_INPUT").unwrap_or(224);
    let batch = env_usize("CROSSPOOL_BENCH_BATCH").unwrap_or(1);
    let mut group = c.benchmark_group(format!(
        "cpu_conv2d/{}-threads",
        rayon::current_num_threads()
    ));
    group.sample_size(10);
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
        let layer = CpuConv2d::new(&weights).expect("layer");
        let x: Vec<f32> = (0..shape.len()).map(|i| (i % 11) as f32 * 0.1).collect();
        let out = spec.output_shape(shape).expect("shape");
        let mut y = vec![0.0; out.len()];
        let flops = 2 * out.len() * spec.k_total();
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(format!("{name}/{batch}x{hw}x{hw}"), |b| {
            b.iter(|| layer.run(&x, shape, &mut y).expect("conv"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_cpu_conv);
criterion_main!(benches);
