//! Steady-state work creates no GPU objects: pipelines are compiled once per context, and a
//! stream of equal-sized batches reuses its bind groups, uniform blocks, buffers and download
//! staging buffers. Counted with the context's own counters, on a context of this test alone.

mod common;

use common::{fresh_gpu, seeded_weights_file};
use crosspool::extract::{self, ExtractConfig};
use crosspool::features::FeatureSpec;
use crosspool::gpu::{Dtype, GpuContext, GpuCounters, GpuTensor, ReluKernel};
use crosspool::input::DecodeOptions;
use crosspool::model::{Arch, ModelWeights};
use crosspool::pipeline::Extractor;
use crosspool::pooling::Normalization;
use crosspool::shape::Shape4;
use crosspool::store::writer::{OutputFormat, Row};
use std::path::{Path, PathBuf};

fn photos(n: usize) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
        .iter()
        .cycle()
        .take(n)
        .map(|f| dir.join(f))
        .collect()
}

fn delta(after: GpuCounters, before: GpuCounters) -> GpuCounters {
    GpuCounters {
        pipelines: after.pipelines - before.pipelines,
        bind_groups: after.bind_groups - before.bind_groups,
        storage_buffers: after.storage_buffers - before.storage_buffers,
        staging_buffers: after.staging_buffers - before.staging_buffers,
    }
}

/// Runs the streaming extraction over `n` photos in batches of 2 and returns what the context
/// created meanwhile.
fn extract_photos(ctx: &GpuContext, ex: &Extractor, w: &ModelWeights, n: usize) -> GpuCounters {
    let before = ctx.counters();
    let cfg = ExtractConfig {
        size: 67,
        batch: 2,
        format: OutputFormat::Bits1,
        decode: DecodeOptions::default(),
    };
    let rows = extract::run_on(
        &mut extract::BackendRunner::new(ctx, ex, &cfg),
        w.preprocess,
        photos(n),
        Vec::new(),
        &cfg,
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(rows.len(), n);
    assert!(rows.iter().all(|r| matches!(r, Row::Ok { .. })));
    delta(ctx.counters(), before)
}

/// In f32 and in f16 storage (whose kernels compile on first use, and whose overflow flags
/// are read back after every batch).
#[test]
fn a_stream_of_batches_creates_nothing_per_batch() {
    for storage in [Dtype::F32, Dtype::F16] {
        stream_creates_nothing_per_batch(storage);
    }
}

fn stream_creates_nothing_per_batch(storage: Dtype) {
    let ctx = fresh_gpu();
    let arch = Arch::Alexnet;
    let w = ModelWeights::from_bytes(
        &seeded_weights_file(arch, None),
        Path::new("seeded"),
        Some(arch),
        None,
    )
    .unwrap();
    let spec = FeatureSpec {
        repr: crosspool::features::Representation::paper_default(arch),
        norm: Normalization::RETRIEVAL,
    };
    let ex = Extractor::with_storage(&ctx, &w, spec, None, storage).unwrap();
    let compiled = ctx.counters().pipelines;
    assert!(compiled >= 4, "the extractor compiles its kernels up front");

    // A first run warms what lives as long as the kernels (their scratch buffers, the
    // staging buffers). After it, a run of one batch and a run of five create the same:
    // each binds its fresh workspace once, and further batches add nothing.
    extract_photos(&ctx, &ex, &w, 2);
    let one = extract_photos(&ctx, &ex, &w, 2);
    let cached_after_one = ctx.cached_bind_groups();
    let five = extract_photos(&ctx, &ex, &w, 10);
    assert_eq!(
        five.pipelines + one.pipelines,
        0,
        "{storage:?}: no kernel is compiled twice"
    );
    assert!(one.bind_groups > 0);
    assert_eq!(
        five.bind_groups, one.bind_groups,
        "{storage:?}: five batches bind no more than one"
    );
    assert_eq!(five.storage_buffers, one.storage_buffers, "{storage:?}");
    assert_eq!(
        five.staging_buffers + one.staging_buffers,
        0,
        "{storage:?}: downloads reuse the staging buffers of the first run"
    );
    // Each run's workspace dies with it, and its bind groups with it: the cache holds what
    // one run needs, not what every run ever bound.
    assert_eq!(ctx.cached_bind_groups(), cached_after_one);
}

#[test]
fn kernels_are_compiled_once_per_context_and_bind_groups_reused() {
    let ctx = fresh_gpu();
    let before = ctx.counters();
    let a = ReluKernel::new(&ctx).unwrap();
    let b = ReluKernel::new(&ctx).unwrap();
    assert_eq!(delta(ctx.counters(), before).pipelines, 1);

    let s = Shape4::new(1, 3, 5, 7);
    let x: Vec<f32> = (0..s.len()).map(|i| i as f32 - 50.0).collect();
    let t = GpuTensor::upload(&ctx, &x, s, "x").unwrap();
    a.run(&ctx, &t).unwrap();
    let once = ctx.counters();
    b.run(&ctx, &t).unwrap();
    a.run(&ctx, &t).unwrap();
    assert_eq!(delta(ctx.counters(), once).bind_groups, 0);
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(t.download(&ctx).unwrap(), want);

    // Dropping the tensor drops the bind groups that named it.
    let held = ctx.cached_bind_groups();
    assert!(held >= 1);
    drop(t);
    assert_eq!(ctx.cached_bind_groups(), held - 1);
}
