//! Criterion benchmark of retrieval scoring (the paper's eq. 3) on VGG16-sized 1-bit codes:
//! 512 pooling channels of 512 values (16 words a row, 32 KiB an image), k = 50 channels or
//! all 512, one query or a batch of 16. Throughput is in elements = image comparisons; a
//! pass includes uploading the queries and downloading every score.
//! Database size: `CROSSPOOL_BENCH_IMAGES` [default 100 000 images, 10 000 on software].

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crosspool::gpu::{GpuContext, GpuDatabase, GpuOptions, ScoreKernel, ScoreKind};
use crosspool::pooling::Quantization;

fn words(n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 32) as u32
        })
        .collect()
}

fn bench_score(c: &mut Criterion) {
    let ctx = GpuContext::new(&GpuOptions::from_env().expect("CROSSPOOL_BACKEND"))
        .expect("the benchmark needs a GPU adapter");
    eprintln!("adapter: {}", ctx.describe());
    let software = ctx.info.device_type == wgpu::DeviceType::Cpu;
    let images = std::env::var("CROSSPOOL_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if software { 10_000 } else { 100_000 });
    let (rows, wpr, cols) = (512usize, 16usize, 512usize);
    let db = GpuDatabase::from_words(
        &ctx,
        ScoreKind::Codes(Quantization::Bits1),
        rows,
        wpr,
        cols,
        &words(images * rows * wpr, 1),
    )
    .expect("database upload");
    let kernel = ScoreKernel::new(&ctx).unwrap();
    let mut group = c.benchmark_group(format!("score/{}", ctx.info.name));
    group.sample_size(10);
    for nq in [1usize, 16] {
        let queries = words(nq * rows * wpr, 2);
        for ksel in [50usize, 512] {
            let sel: Vec<u32> = (0..nq)
                .flat_map(|q| (0..ksel as u32).map(move |k| (k * 7 + q as u32) % 512))
                .collect();
            group.throughput(Throughput::Elements((nq * images) as u64));
            group.bench_function(
                format!("bits1 512x512 k={ksel} {nq} queries x {images} images"),
                |b| b.iter(|| kernel.score(&ctx, &db, &queries, &sel, ksel).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_score);
criterion_main!(benches);
