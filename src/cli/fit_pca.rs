//! `crosspool fit-pca`.

use anyhow::Context;
use crosspool::gpu::{GpuContext, GpuOptions, GpuTensor, MomentsGpu};
use crosspool::input::{collect_images, load_batch};
use crosspool::model::{Arch, ModelWeights};
use crosspool::pca::{MomentAccumulator, Pca};
use crosspool::pooling::LocalWindow;
use crosspool::shape::Shape4;
use std::path::{Path, PathBuf};

/// Arguments of `fit-pca`.
#[derive(clap::Args)]
pub struct Args {
    /// Images, directories (searched recursively) to fit on.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Safetensors weights file.
    #[arg(long)]
    weights: PathBuf,
    /// Architecture, if the file's metadata does not name it.
    #[arg(long, value_enum)]
    model: Option<Arch>,
    /// Layer whose local features are fitted [default: the paper's layer t: vgg16 conv5_2,
    /// vgg19 conv5_3, alexnet conv4].
    #[arg(long)]
    layer: Option<String>,
    /// Local-feature window, MxN with odd sides (the CVPR variant uses neighbourhoods).
    #[arg(long, default_value = "1x1", value_parser = super::parse_window)]
    window: LocalWindow,
    /// Images are resized to SIZE x SIZE.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Keep this many components [default: all, which decorrelates without reducing].
    #[arg(long)]
    dims: Option<usize>,
    /// Output file.
    #[arg(long, short)]
    out: PathBuf,
}

/// Runs `fit-pca`.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let images = collect_images(&a.inputs)?;
    anyhow::ensure!(!images.is_empty(), "no images found in {:?}", a.inputs);
    let arch = ModelWeights::arch_of(&a.weights, a.model)?;
    let layer = a
        .layer
        .clone()
        .unwrap_or_else(|| arch.default_pair().0.to_string());
    let weights = ModelWeights::load(&a.weights, Some(arch), Some(&layer))?;
    let ctx = GpuContext::new(opts).context("opening the GPU")?;
    eprintln!(
        "fit-pca: {} {layer} {}x{} on {} images at {}x{}, {}",
        weights.arch,
        a.window.h,
        a.window.w,
        images.len(),
        a.size,
        a.size,
        ctx.describe()
    );
    let moments = MomentsGpu::new(&ctx, &weights, &layer, a.window)?;
    let mut acc: Option<MomentAccumulator> = None;
    let mut workspace = None;
    let mut channels = 0;
    for (i, chunk) in images.chunks(a.batch).enumerate() {
        let refs: Vec<&Path> = chunk.iter().map(PathBuf::as_path).collect();
        let x = load_batch(&refs, a.size, &weights.preprocess)?;
        let shape = Shape4::new(chunk.len(), a.size as usize, a.size as usize, 3);
        // One workspace per batch size: all but the last batch share one.
        if workspace.as_ref().is_none_or(|(n, _)| *n != chunk.len()) {
            workspace = Some((chunk.len(), moments.workspace(&ctx, shape)?));
        }
        let ws = &workspace.as_ref().expect("set above").1;
        channels = moments.channels(ws);
        let acc = acc.get_or_insert_with(|| MomentAccumulator::new(a.window.feature_len(channels)));
        let gx = GpuTensor::upload(&ctx, &x, shape, "images")?;
        moments.add_batch(&ctx, &gx, ws, acc)?;
        eprintln!(
            "fit-pca: {}/{} images",
            (i * a.batch + chunk.len()).min(images.len()),
            images.len()
        );
    }
    let acc = acc.expect("at least one batch");
    let pca = Pca::fit(
        &acc,
        weights.arch.name(),
        &layer,
        a.window,
        channels,
        a.dims,
    )?;
    pca.save(&a.out)?;
    let total: f64 = pca.eigenvalues.iter().map(|&v| v as f64).sum();
    let kept: f64 = pca.eigenvalues[..pca.dims].iter().map(|&v| v as f64).sum();
    println!(
        "wrote {}: {} -> {} dimensions from {} local features, {:.1}% of the variance kept",
        a.out.display(),
        pca.feature_len(),
        pca.dims,
        pca.units,
        if total > 0.0 {
            100.0 * kept / total
        } else {
            100.0
        }
    );
    Ok(())
}
