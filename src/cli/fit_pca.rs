//! `crosspool fit-pca`.

use super::engine::{Device, Engine};
use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::input::{expand_inputs, DecodeMode, DecodeOptions};
use crosspool::model::{Arch, ModelWeights};
use crosspool::pca::{MomentAccumulator, Pca};
use crosspool::pipeline::{Backend, Moments, MomentsWorkspace};
use crosspool::pooling::LocalWindow;
use crosspool::shape::Shape4;
use std::path::PathBuf;

/// Arguments of `fit-pca`.
#[derive(clap::Args)]
pub struct Args {
    /// Images, directories (searched recursively), list files (*.txt / *.list: one path per
    /// line), or `-` to read paths from standard input, to fit on. Images that cannot be
    /// read are reported and left out.
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
    /// JPEG decoding (see `extract --decode`); use the mode the features will be extracted with.
    #[arg(long, value_enum, default_value_t = DecodeMode::Fast)]
    decode: DecodeMode,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Keep this many components [default: all, which decorrelates without reducing].
    #[arg(long)]
    dims: Option<usize>,
    /// Output file.
    #[arg(long, short)]
    out: PathBuf,
    /// Where the network runs (see `extract --device`).
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
}

/// The moments of `layer`'s local features over `images` on `backend`, the layer's channels
/// and how many images could not be read (reported and left out).
fn accumulate<B: Backend>(
    backend: &B,
    a: &Args,
    weights: &ModelWeights,
    layer: &str,
    images: &[PathBuf],
) -> anyhow::Result<(Option<MomentAccumulator>, usize, usize)> {
    let moments = Moments::new(backend, weights, layer, a.window)?;
    let mut acc: Option<MomentAccumulator> = None;
    let decode = DecodeOptions {
        mode: a.decode,
        ..DecodeOptions::default()
    };
    // One workspace and input tensor per batch size: all but the last batch share one.
    let mut buffers: Option<(usize, MomentsWorkspace<B>, B::Tensor)> = None;
    let mut channels = 0;
    let (mut seen, mut failed) = (0, 0);
    for chunk in images.chunks(a.batch) {
        let (x, ok) = super::decode_batch(chunk, a.size, &weights.preprocess, decode, "fit-pca");
        let n = ok.len();
        failed += chunk.len() - n;
        seen += chunk.len();
        if n > 0 {
            let shape = Shape4::new(n, a.size as usize, a.size as usize, 3);
            if buffers.as_ref().is_none_or(|(m, _, _)| *m != n) {
                buffers = Some((
                    n,
                    moments.workspace(backend, shape)?,
                    backend.tensor(shape, "images")?,
                ));
            }
            let (_, ws, input) = buffers.as_ref().expect("set above");
            channels = moments.channels(ws);
            let acc =
                acc.get_or_insert_with(|| MomentAccumulator::new(a.window.feature_len(channels)));
            backend.write(input, &x)?;
            moments.add_batch(backend, input, ws, acc)?;
        }
        eprintln!("fit-pca: {seen}/{} images", images.len());
    }
    Ok((acc, channels, failed))
}

/// Runs `fit-pca`.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let images = expand_inputs(&a.inputs)?;
    anyhow::ensure!(!images.is_empty(), "no images found in the inputs given");
    let arch = ModelWeights::arch_of(&a.weights, a.model)?;
    let layer = a
        .layer
        .clone()
        .unwrap_or_else(|| arch.default_pair().0.to_string());
    arch.check_input_size(a.size as usize, &layer)?;
    let weights = ModelWeights::load(&a.weights, Some(arch), Some(&layer))?;
    let engine = Engine::open(a.device, opts)?;
    eprintln!(
        "fit-pca: {} {layer} {} on {} images at {}x{}, {}",
        weights.arch,
        a.window,
        images.len(),
        a.size,
        a.size,
        engine.describe()
    );
    let (acc, channels, failed) = match &engine {
        Engine::Gpu(ctx) => accumulate::<GpuContext>(ctx, &a, &weights, &layer, &images)?,
        Engine::Cpu(cpu) => accumulate(cpu, &a, &weights, &layer, &images)?,
    };
    if failed > 0 {
        eprintln!("fit-pca: {failed} image(s) could not be read and were left out");
    }
    anyhow::ensure!(
        acc.is_some(),
        "none of the {} images could be read; nothing to fit",
        images.len()
    );
    let acc = acc.expect("checked above");
    let pca = Pca::fit(
        &acc,
        weights.arch.name(),
        &layer,
        a.window,
        channels,
        a.dims,
    )?;
    // The centred covariance of n features has rank n - 1 at most: components past it carry
    // no variance and their directions are arbitrary.
    let rank = pca.units.saturating_sub(1);
    if pca.dims as u64 > rank {
        eprintln!(
            "fit-pca: warning: {} local features span at most {rank} dimensions, so {} of the {} components kept carry no variance; fit on at least {} local features (more images, or a larger --size, which gives fully connected layers a denser grid)",
            pca.units,
            pca.dims as u64 - rank,
            pca.dims,
            pca.dims + 1
        );
    }
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
