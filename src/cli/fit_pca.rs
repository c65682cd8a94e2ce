//! `crosspool fit-pca`.

use super::engine::{apply_precision_on_all, Device, Engine, Precision};
use crosspool::extract::F16_OVERFLOW;
use crosspool::gpu::{Dtype, GpuContext, GpuOptions};
use crosspool::input::{DecodeMode, DecodeOptions, ImageSource};
use crosspool::model::ModelWeights;
use crosspool::pca::{MomentAccumulator, Pca};
use crosspool::pipeline::{Backend, Moments};
use crosspool::pooling::LocalWindow;
use std::path::PathBuf;

/// Arguments of `fit-pca`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    images: super::ImageInputs,
    #[command(flatten)]
    net: super::NetworkArgs,
    /// Layer whose local features are fitted [default: the paper's layer t: vgg16 conv5_2,
    /// vgg19 conv5_3, alexnet conv4; resnet50/101 layer4.1].
    #[arg(long)]
    layer: Option<String>,
    /// Local-feature window, MxN with odd sides (the CVPR variant uses neighbourhoods).
    #[arg(long, default_value = "1x1", value_parser = super::parse_window)]
    window: LocalWindow,
    /// Images are resized to SIZE x SIZE.
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// JPEG decoding (see `extract --decode`); use the mode the features will be extracted with.
    #[arg(long, value_parser = super::choice::choice::<DecodeMode>(), default_value_t = DecodeMode::Fast)]
    decode: DecodeMode,
    /// Images per GPU batch.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 8)]
    batch: usize,
    /// Keep this many components [default: all, which decorrelates without reducing].
    #[arg(long, value_parser = super::at_least_one)]
    dims: Option<usize>,
    /// Output file.
    #[arg(long, short)]
    out: PathBuf,
    /// Where the network runs (see `extract --device`).
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    /// Fit on several GPUs at once (see `extract --devices`): each takes every N-th batch,
    /// and their sums are added in device order.
    #[arg(long, value_parser = super::engine::parse_devices)]
    devices: Option<super::engine::DeviceList>,
    /// How the network computes (see `extract --precision`); images whose activations
    /// overflow f16 are reported and left out.
    #[arg(long, value_parser = super::choice::choice::<Precision>(), default_value_t = Precision::F32)]
    precision: Precision,
}

/// The moments of `layer`'s local features over part `(k, n)` of `images` (batches k, k + n,
/// ...) on `backend`, the layer's channels and how many images could not be read (reported
/// and left out); progress lines start with `label`.
fn accumulate<B: Backend>(
    backend: &B,
    a: &Args,
    (weights, storage): (&ModelWeights, Dtype),
    layer: &str,
    images: &[ImageSource],
    (k, n): (usize, usize),
    label: &str,
) -> anyhow::Result<(Option<MomentAccumulator>, usize, usize)> {
    let moments = Moments::with_storage(backend, weights, layer, a.window, storage)?;
    let mut acc: Option<MomentAccumulator> = None;
    let decode = DecodeOptions {
        mode: a.decode,
        ..DecodeOptions::default()
    };
    // One workspace and input tensor per batch size: all but the last batch share one.
    let mut buffers = super::BatchBuffers::new();
    let mut channels = 0;
    let (mut seen, mut failed) = (0, 0);
    let mine: Vec<&[ImageSource]> = images.chunks(a.batch).skip(k).step_by(n).collect();
    let total: usize = mine.iter().map(|c| c.len()).sum();
    let per_image = (a.size * a.size * 3) as usize;
    for chunk in mine {
        let (mut x, mut ok) =
            super::decode_batch(chunk, a.size, &weights.preprocess, decode, "fit-pca");
        failed += chunk.len() - ok.len();
        seen += chunk.len();
        // Until the batch adds up: images that overflow f16 are left out and the rest rerun.
        while !ok.is_empty() {
            let n = ok.len();
            let (ws, input) =
                buffers.for_batch(backend, (n, a.size), |s| moments.workspace(backend, s))?;
            channels = moments.channels(ws);
            let acc =
                acc.get_or_insert_with(|| MomentAccumulator::new(a.window.feature_len(channels)));
            backend.write(input, &x)?;
            let overflowed = moments.add_batch(backend, input, ws, acc)?;
            if overflowed.is_empty() {
                break;
            }
            for &i in overflowed.iter().rev() {
                let name = chunk[ok[i]].name();
                eprintln!("fit-pca: {}: {F16_OVERFLOW} (left out)", name.display());
                ok.remove(i);
                x.drain(i * per_image..(i + 1) * per_image);
                failed += 1;
            }
        }
        eprintln!("fit-pca: {label}{seen}/{total} images");
    }
    Ok((acc, channels, failed))
}

/// Runs `fit-pca`.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<()> {
    super::output_folder_for(&a.out)?;
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    let images = a.images.sources()?;
    anyhow::ensure!(!images.is_empty(), "no images found in the inputs given");
    let arch = ModelWeights::arch_of(&a.net.weights, a.net.model)?;
    let layer = a
        .layer
        .clone()
        .unwrap_or_else(|| arch.default_pair().0.to_string());
    arch.check_input_size(a.size as usize, &layer)?;
    let weights = ModelWeights::load(&a.net.weights, Some(arch), Some(&layer))?;
    // Refused before the images are read, not after every one has been through the network.
    if let (Some(dims), Some(w)) = (a.dims, weights.layer(&layer)) {
        let f = a.window.feature_len(w.spec.out_c);
        anyhow::ensure!(
            dims <= f,
            "--dims {dims} is more than the {f} values of a {} local feature of {layer}: use at most {f}",
            a.window
        );
    }
    let mut engines = super::engine::open_engines(a.device, a.devices.as_ref(), opts)?;
    eprintln!(
        "fit-pca: {} {layer} {} on {} images at {}x{}, {}",
        weights.arch,
        a.window,
        images.len(),
        a.size,
        a.size,
        engines
            .iter()
            .map(Engine::describe)
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let storage = apply_precision_on_all(&mut engines, a.precision)?;
    let n = engines.len();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = engines
            .iter()
            .enumerate()
            .map(|(k, engine)| {
                let (a, layer, images) = (&a, &layer, &images);
                let weights = (&weights, storage);
                scope.spawn(move || {
                    let label = if n > 1 {
                        format!("GPU {k}: ")
                    } else {
                        String::new()
                    };
                    match engine {
                        Engine::Gpu(ctx) => {
                            accumulate::<GpuContext>(ctx, a, weights, layer, images, (k, n), &label)
                        }
                        Engine::Cpu(cpu) => {
                            accumulate(cpu, a, weights, layer, images, (k, n), &label)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a fit-pca device thread panicked")))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    // Added in device order: the same devices give the same fit.
    let (mut acc, mut channels, mut failed) = (None::<MomentAccumulator>, 0, 0);
    for (part, c, f) in parts {
        failed += f;
        if let Some(p) = part {
            channels = c;
            match &mut acc {
                Some(total) => total.merge(&p)?,
                None => acc = Some(p),
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "fit-pca: {failed} image(s) could not be read or overflowed f16, and were left out"
        );
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
