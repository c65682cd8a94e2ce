//! `crosspool train-aconv`: trains the paper's added 1x1 convolution on fc6's dense map of
//! labelled images (the AConv layer that `extract --aconv` pools with).

use super::engine::{Device, Engine};
use crosspool::classifier::aconv::{self, HostF64, Maps, PreActivations, Training};
use crosspool::classifier::aconv_file::{AConvFile, AConvMeta};
use crosspool::gpu::{GpuContext, GpuOptions};
use crosspool::input::image_identity;
use crosspool::input::{expand_inputs, DecodeMode, DecodeOptions, ImageSource};
use crosspool::model::ModelWeights;
use crosspool::pipeline::{Backend, DevicePreActivations, LayerMaps};
use crosspool::store::labels::{LabelSource, Labels};
use std::path::PathBuf;

/// Arguments of `train-aconv`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled training images: files, directories (searched recursively), list files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Their labels: `folder` (each image's parent folder) or a CSV / JSON-lines file, as
    /// `extract --labels` takes them.
    #[arg(long)]
    labels: String,
    #[command(flatten)]
    net: super::NetworkArgs,
    /// The layer whose dense map the added layer convolves.
    #[arg(long, default_value = "fc6")]
    layer: String,
    /// Images are resized to SIZE x SIZE; fc6 then runs over a grid of (SIZE/32 - 6)^2
    /// positions for VGG (8x8 at 448), which the max-pooling runs over.
    #[arg(long, default_value_t = 448)]
    size: u32,
    /// JPEG decoding (see `extract --decode`); use the mode the features will be extracted with.
    #[arg(long, value_parser = super::choice::choice::<DecodeMode>(), default_value_t = DecodeMode::Fast)]
    decode: DecodeMode,
    /// Filters of the added layer (the paper: 100).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 100)]
    filters: usize,
    /// Passes over the training images (the paper: 50).
    #[arg(long, value_parser = super::at_least_one, default_value_t = 50)]
    epochs: usize,
    /// SGD step size (the paper: 0.01).
    #[arg(long, value_parser = super::positive, default_value_t = 0.01)]
    learning_rate: f64,
    /// SGD momentum.
    #[arg(long, value_parser = super::fraction, default_value_t = 0.9)]
    momentum: f64,
    /// L2 penalty on the weights.
    #[arg(long, value_parser = super::non_negative, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Images per SGD step.
    #[arg(long, value_parser = super::at_least_one, default_value_t = 16)]
    batch: usize,
    /// Seed of the initial weights and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the network and the added layer's forward pass run (see `extract --device`); the
    /// max-pooling, the head and the gradient run on the CPU.
    #[arg(long, value_parser = super::choice::choice::<Device>(), default_value_t = Device::Auto)]
    device: Device,
    /// The layer file to write (safetensors).
    #[arg(long, short)]
    out: PathBuf,
}

/// The maps of a layer for a list of images.
struct ReadMaps {
    /// `[image][position][channel]`.
    x: Vec<f32>,
    /// `(h, w)` of each map.
    grid: (usize, usize),
    channels: usize,
    /// Indices of the images read (into the list).
    read: Vec<usize>,
}

/// The maps of `layer` for `images`; an image that cannot be read is reported and left out.
fn read_maps<B: Backend>(
    backend: &B,
    a: &Args,
    weights: &ModelWeights,
    images: &[PathBuf],
) -> anyhow::Result<ReadMaps> {
    const BATCH: usize = 8;
    let maps = LayerMaps::new(backend, weights, &a.layer)?;
    let decode = DecodeOptions {
        mode: a.decode,
        ..DecodeOptions::default()
    };
    let mut buffers = super::BatchBuffers::new();
    let (mut all, mut read, mut grid, mut channels) = (Vec::new(), Vec::new(), (0, 0), 0);
    for (c, chunk) in images.chunks(BATCH).enumerate() {
        let chunk: Vec<ImageSource> = chunk.iter().cloned().map(ImageSource::File).collect();
        let (x, ok) =
            super::decode_batch(&chunk, a.size, &weights.preprocess, decode, "train-aconv");
        read.extend(ok.iter().map(|j| c * BATCH + j));
        let n = ok.len();
        if n > 0 {
            let (ws, input) =
                buffers.for_batch(backend, (n, a.size), |s| maps.workspace(backend, s))?;
            let s = maps.shape(ws);
            (grid, channels) = ((s.h, s.w), s.c);
            backend.write(input, &x)?;
            all.extend(maps.run(backend, input, ws)?);
        }
        eprintln!(
            "train-aconv: {} maps of {}/{} images",
            a.layer,
            (c * BATCH + chunk.len()),
            images.len()
        );
    }
    Ok(ReadMaps {
        x: all,
        grid,
        channels,
        read,
    })
}

/// Runs `train-aconv`.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<()> {
    super::output_folder_for(&a.out)?;
    let mut seen = std::collections::HashSet::new();
    let images: Vec<PathBuf> = expand_inputs(&a.inputs)?
        .into_iter()
        .filter(|p| seen.insert(image_identity(p)))
        .collect();
    anyhow::ensure!(!images.is_empty(), "no images found in the inputs given");
    let labels = Labels::load(LabelSource::parse(&a.labels))?;
    labels.check_all_labelled(&images)?;
    let names: Vec<String> = images
        .iter()
        .map(|p| labels.label_of(p).expect("checked above"))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (classes, y) = super::classify::class_indices(&name_refs);
    anyhow::ensure!(
        classes.len() >= 2,
        "the images hold one class only ('{}'): training needs at least two",
        classes.join("")
    );
    let arch = ModelWeights::arch_of(&a.net.weights, a.net.model)?;
    arch.check_input_size(a.size as usize, &a.layer)?;
    let weights = ModelWeights::load(&a.net.weights, Some(arch), Some(&a.layer))?;
    let engine = Engine::open(a.device, opts)?;
    eprintln!(
        "train-aconv: {} images of {} classes, {arch} {} at {}x{}, on {}",
        images.len(),
        classes.len(),
        a.layer,
        a.size,
        a.size,
        engine.describe()
    );
    let ReadMaps {
        x,
        grid,
        channels: d,
        read,
    } = match &engine {
        Engine::Gpu(ctx) => read_maps::<GpuContext>(ctx, &a, &weights, &images)?,
        Engine::Cpu(cpu) => read_maps(cpu, &a, &weights, &images)?,
    };
    anyhow::ensure!(
        !read.is_empty(),
        "none of the {} images could be read",
        images.len()
    );
    if read.len() < images.len() {
        eprintln!(
            "train-aconv: {} image(s) could not be read and were left out",
            images.len() - read.len()
        );
    }
    let y: Vec<usize> = read.iter().map(|&i| y[i]).collect();
    let units = grid.0 * grid.1;
    let maps = Maps {
        x: &x,
        units,
        d,
        y: &y,
        classes: classes.len(),
    };
    let training = Training {
        filters: a.filters,
        epochs: a.epochs,
        learning_rate: a.learning_rate,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        batch: a.batch,
        seed: a.seed,
    };
    eprintln!(
        "train-aconv: {} filters on {units} positions of {d} channels, {} epochs of SGD, the layer on {}",
        a.filters,
        a.epochs,
        match &engine {
            Engine::Gpu(_) => "the GPU (f32)",
            Engine::Cpu(_) => "the CPU (f64)",
        }
    );
    let mut epochs = Vec::new();
    // The layer's GEMM runs on the GPU when there is one (f32), else on the host in f64.
    let device;
    let pre: &dyn PreActivations = match &engine {
        Engine::Gpu(ctx) => {
            let ctx: &GpuContext = ctx;
            device = DevicePreActivations::new(ctx, grid)?;
            &device
        }
        Engine::Cpu(_) => &HostF64,
    };
    let layer = aconv::train(&maps, &training, pre, &mut |e| {
        eprintln!(
            "train-aconv: epoch {:>3}  objective {:.5}  training accuracy {:.2}%",
            e.epoch,
            e.objective,
            100.0 * e.accuracy
        );
        epochs.push(e.clone());
    })?;
    let last = epochs.last().map(|e| e.accuracy).unwrap_or(0.0);
    let file = AConvFile {
        layer,
        meta: AConvMeta {
            version: 1,
            arch,
            layer: a.layer.clone(),
            weights: image_identity(&a.net.weights).display().to_string(),
            weights_fingerprint: ModelWeights::fingerprint(&a.net.weights)?,
            size: a.size,
            decode: a.decode,
            classes,
            images: read.len(),
            training,
            epochs,
        },
    };
    file.save(&a.out)?;
    println!(
        "wrote {}: {} filters on {} of {arch}, training accuracy {:.2}%",
        a.out.display(),
        a.filters,
        a.layer,
        100.0 * last
    );
    Ok(())
}
