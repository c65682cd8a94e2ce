//! Subcommands with more than a few lines of their own.

pub mod aconv;
pub mod bench;
pub mod choice;
pub mod classify;
pub mod extract;
pub mod fit_pca;
pub mod retrieval;
pub mod selftest;
pub mod serve;

/// Makes the folder an output file goes in, before any work (as `index`, `classify` and
/// `evaluate` make theirs): a missing folder must not fail a run at its end.
pub fn output_folder_for(file: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the folder of {}", file.display())),
        None => Ok(()),
    }
}

/// A whole number of at least 1 (batches, epochs, filters, rows per shard).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    whole_at_least(s, 1)
}

/// A whole number of at least 2 (cross-validation folds).
pub fn at_least_two(s: &str) -> Result<usize, String> {
    whole_at_least(s, 2)
}

/// `s` as a whole number of at least `min`.
fn whole_at_least(s: &str, min: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("'{s}' is not a whole number of at least {min}")),
    }
}

/// A finite number above 0 (a regularisation constant, a learning rate).
pub fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a finite number above 0")),
    }
}

/// A finite number of at least 0 (a weight decay).
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a finite number of at least 0")),
    }
}

/// A number from 0 up to, but not including, 1 (a momentum).
pub fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "'{s}' is not a number from 0 up to (not including) 1"
        )),
    }
}

/// Parses an `MxN` local window such as `1x1` or `3x3`.
pub fn parse_window(s: &str) -> Result<crosspool::pooling::LocalWindow, String> {
    crosspool::pooling::LocalWindow::parse(s).map_err(|e| e.to_string())
}

pub mod engine;

/// The network's weights, as `extract`, `fit-pca` and `train-aconv` name them.
#[derive(clap::Args)]
pub struct NetworkArgs {
    /// Safetensors weights file (train-aconv needs the fully connected layers in it).
    #[arg(long)]
    pub weights: std::path::PathBuf,
    /// Architecture, if the file's metadata does not name it.
    #[arg(long, value_parser = choice::choice::<crosspool::model::Arch>())]
    pub model: Option<crosspool::model::Arch>,
}

/// The images `extract` and `fit-pca` read.
#[derive(clap::Args)]
pub struct ImageInputs {
    /// Images, WebDataset tar shards (*.tar: each image member is an image, its sample's
    /// .json/.txt/.cls carried into extract's manifest), directories (searched recursively
    /// for both), list files (*.txt / *.list: one path per line), patterns the shell did not
    /// expand ('shards/*.tar'), or `-` to read paths from standard input. Images that cannot
    /// be read are reported and left out.
    #[arg(required = true)]
    pub inputs: Vec<std::path::PathBuf>,
}

impl ImageInputs {
    /// Every image the inputs name, tar members read in place.
    pub fn sources(&self) -> crosspool::error::Result<Vec<crosspool::input::ImageSource>> {
        let paths = crosspool::input::expand_inputs(&self.inputs)?;
        Ok(crosspool::input::expand_sources(paths))
    }
}

/// How `extract` and `bench` spread batches over GPUs and store activations.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Run on several GPUs at once: `all`, or adapter indices from `crosspool info --list`
    /// (`0,2,3`; an index twice opens that GPU twice). extract shares decoding and writing:
    /// each GPU takes the next batch when it is free, and the output is the same rows in the
    /// same order as on one device. bench measures the first alone as usual, then every one
    /// running --iters whole batches at the same time, and reports their combined images/s
    /// and the scaling over the first alone.
    #[arg(long, value_parser = engine::parse_devices)]
    pub devices: Option<engine::DeviceList>,
    /// Batches in flight per device, each with its own buffers: while one computes, the next
    /// is uploaded and the one before read back [default: 2 on a GPU, 1 on the CPU backend].
    /// 1 halves the GPU memory a run takes. bench times batches one at a time, then (when
    /// this or --devices asks for more than one) an overlapped pass of this many streams of
    /// whole batches per device.
    #[arg(long, value_parser = at_least_one)]
    pub in_flight: Option<usize>,
    /// How the network computes (sums are f32 in all; an f16 image whose activations pass
    /// f16's range fails, naming why; bf16's speed and fidelity: docs/benchmarks.md). extract
    /// records it in extract.json.
    #[arg(long, value_parser = choice::choice::<engine::Precision>(), default_value_t = engine::Precision::F32)]
    pub precision: engine::Precision,
}

/// A batch's workspace and input tensor, kept while batches keep their size and remade when
/// it changes (the last batch is short, and so is one with images left out).
pub struct BatchBuffers<B: crosspool::pipeline::Storage, W>(Option<(usize, W, B::Tensor)>);

impl<B: crosspool::pipeline::Storage, W> BatchBuffers<B, W> {
    /// None yet.
    pub fn new() -> Self {
        BatchBuffers(None)
    }

    /// The workspace (made by `workspace` for the input's shape) and input tensor for `n`
    /// images of `size` x `size`, remade only if the last batch had another size.
    pub fn for_batch(
        &mut self,
        backend: &B,
        (n, size): (usize, u32),
        workspace: impl FnOnce(crosspool::shape::Shape4) -> crosspool::error::Result<W>,
    ) -> crosspool::error::Result<(&W, &B::Tensor)> {
        if self.0.as_ref().is_none_or(|(m, _, _)| *m != n) {
            let shape = crosspool::shape::Shape4::new(n, size as usize, size as usize, 3);
            self.0 = Some((n, workspace(shape)?, backend.tensor(shape, "images")?));
        }
        let (_, w, t) = self.0.as_ref().expect("set above");
        Ok((w, t))
    }
}

/// Decodes and preprocesses `images` on all cores for a batch: the values of those read, in
/// order, and their indices in `images`. One that cannot be read is reported as
/// `"{command}: NAME: REASON (left out)"` and left out.
pub fn decode_batch(
    images: &[crosspool::input::ImageSource],
    size: u32,
    pre: &crosspool::model::Preprocess,
    decode: crosspool::input::DecodeOptions,
    command: &str,
) -> (Vec<f32>, Vec<usize>) {
    use rayon::prelude::*;
    let prepared: Vec<_> = images
        .par_iter()
        .map(|p| crosspool::input::prepare_source(p, size, pre, decode))
        .collect();
    let (mut x, mut read) = (Vec::new(), Vec::new());
    for (j, (p, r)) in images.iter().zip(prepared).enumerate() {
        match r {
            Ok(v) => {
                x.extend(v);
                read.push(j);
            }
            Err(e) => eprintln!(
                "{command}: {}: {} (left out)",
                p.name().display(),
                crosspool::input::failure_reason(&e)
            ),
        }
    }
    (x, read)
}
