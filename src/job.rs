//! The extraction job as a library: what the user asked for ([`ExtractOptions`]) loaded and
//! checked into an [`ExtractJob`] (network, feature, weights, PCA, AConv layer), which makes
//! the extractors on the devices a run opens and the settings record it writes. The command
//! line's `extract`, `search` and `classify`, and the Python package, all start here.

use crate::classifier::aconv_file::AConvFile;
use crate::cpu::Products;
use crate::engine::{Engine, FeatureDevice};
use crate::error::{Error, Result};
use crate::features::{FeatureRequest, FeatureSpec, ADDED_GUIDE};
use crate::gpu::Dtype;
use crate::input::{image_identity, DecodeMode};
use crate::model::{Arch, ModelWeights};
use crate::pca::Pca;
use crate::store::settings::SETTINGS_VERSION;
use crate::store::writer::OutputFormat;
use crate::store::ExtractSettings;
use crate::weights::Conv2dWeights;
use std::path::{Path, PathBuf};

/// What to extract, as a user asks for it.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// Safetensors weights file.
    pub weights: PathBuf,
    /// Architecture, if the file's metadata does not name it.
    pub model: Option<Arch>,
    /// The feature.
    pub features: FeatureRequest,
    /// Images are resized to `size` x `size`.
    pub size: u32,
    /// PCA of the local features (from `fit-pca`).
    pub pca: Option<PathBuf>,
    /// The added AConv layer (from `train-aconv`) that guides the pooling.
    pub aconv: Option<PathBuf>,
}

impl ExtractOptions {
    /// The options of the run that recorded `s`: features comparable to its own.
    pub fn like(s: &ExtractSettings) -> Self {
        ExtractOptions {
            weights: PathBuf::from(&s.weights),
            model: Some(s.arch),
            features: s.request(),
            size: s.size,
            pca: s.pca.as_ref().map(PathBuf::from),
            aconv: s.aconv.as_ref().map(PathBuf::from),
        }
    }
}

/// An extraction ready to run: everything [`ExtractOptions`] names, loaded and checked.
pub struct ExtractJob {
    /// What was asked for.
    pub options: ExtractOptions,
    /// The network.
    pub arch: Arch,
    /// The layers pooled (the defaults filled in).
    pub layers: Vec<String>,
    /// The feature, checked against the network.
    pub spec: FeatureSpec,
    /// The network's weights, up to the deepest layer the feature reads.
    pub weights: ModelWeights,
    /// The PCA of the local features.
    pub pca: Option<Pca>,
    /// The added AConv layer as a convolution.
    pub aconv: Option<Conv2dWeights>,
    /// The weights file's content fingerprint, once read (it hashes the whole file).
    fingerprint: std::sync::OnceLock<String>,
    /// What the user should know but that does not stop the job.
    pub warnings: Vec<String>,
}

impl ExtractJob {
    /// Loads and checks what `options` names: the network and feature, the input size, the
    /// weights, the PCA, and the AConv layer against this network, weights and size.
    pub fn prepare(options: ExtractOptions) -> Result<Self> {
        let arch = ModelWeights::arch_of(&options.weights, options.model)?;
        let aconv_file = options.aconv.as_deref().map(AConvFile::load).transpose()?;
        let request = &options.features;
        let layers = match (&aconv_file, request.layers.is_empty()) {
            (Some(ac), true) => vec![ac.meta.layer.clone(), ADDED_GUIDE.into()],
            _ => request.layers_for(arch),
        };
        let spec = FeatureRequest {
            layers: layers.clone(),
            ..request.clone()
        }
        .spec(arch)?;
        let deepest = spec.deepest_layer(arch)?;
        arch.check_input_size(options.size as usize, deepest)?;
        let weights = ModelWeights::load(&options.weights, Some(arch), Some(deepest))?;
        let pca = options.pca.as_deref().map(Pca::load).transpose()?;
        let mut job = ExtractJob {
            arch,
            layers,
            spec,
            weights,
            pca,
            aconv: None,
            fingerprint: std::sync::OnceLock::new(),
            warnings: Vec::new(),
            options,
        };
        if let Some(ac) = &aconv_file {
            job.aconv = Some(job.check_aconv(ac)?);
        }
        Ok(job)
    }

    /// The weights file's content fingerprint ([`ModelWeights::fingerprint`]).
    pub fn weights_fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = ModelWeights::fingerprint(&self.options.weights)?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// The AConv layer as a convolution, checked against the job: trained on this network's
    /// local layer with these weights (their content), and at this size (a warning if not:
    /// the 1x1 layer runs at any size, but was trained on another grid).
    fn check_aconv(&mut self, ac: &AConvFile) -> Result<Conv2dWeights> {
        let path = self.options.aconv.as_deref().map(Path::display);
        let path = path.map(|p| p.to_string()).unwrap_or_default();
        let local = self.spec.repr.local_layer();
        if !self.spec.repr.added_guide() {
            return Err(Error::Config(format!(
                "--aconv {path} is given but --layers {} does not pool with it (use --layers {},{ADDED_GUIDE})",
                self.options.features.layers.join(","),
                ac.meta.layer
            )));
        }
        if ac.meta.arch != self.arch || ac.meta.layer != local {
            return Err(Error::Config(format!(
                "{path} was trained on {} {}, but the features pool {} {local}",
                ac.meta.arch, ac.meta.layer, self.arch
            )));
        }
        if ac.meta.weights_fingerprint != self.weights_fingerprint()? {
            return Err(Error::Config(format!(
                "{path} was trained on the map of other weights ({}) than {}",
                ac.meta.weights,
                self.options.weights.display()
            )));
        }
        if ac.meta.size != self.options.size {
            self.warnings.push(format!(
                "{path} was trained at {0}x{0}; these features are extracted at {1}x{1}",
                ac.meta.size, self.options.size
            ));
        }
        ac.to_conv()
    }

    /// The feature extractor on each of `engines` (set to a precision with
    /// [`crate::engine::apply_precision_on_all`], which gave `storage`).
    pub fn extractors<'e>(
        &self,
        engines: &'e [Engine],
        storage: Dtype,
    ) -> Result<Vec<Box<dyn FeatureDevice + 'e>>> {
        engines
            .iter()
            .map(|e| self.extractor_on(e, storage))
            .collect()
    }

    /// The feature extractor on `engine`, the network stored as `storage`.
    pub fn extractor_on<'e>(
        &self,
        engine: &'e Engine,
        storage: Dtype,
    ) -> Result<Box<dyn FeatureDevice + 'e>> {
        let (pca, aconv) = (self.pca.as_ref(), self.aconv.as_ref());
        engine.extractor(&self.weights, self.spec.clone(), pca, aconv, storage)
    }

    /// `engine` with the feature extractor, owned together (see [`Engine::into_extractor`]);
    /// the network stored as `storage`, what [`Engine::apply_precision`] gave.
    pub fn into_extractor(&self, engine: Engine, storage: Dtype) -> Result<Box<dyn FeatureDevice>> {
        let (pca, aconv) = (self.pca.as_ref(), self.aconv.as_ref());
        engine.into_extractor(&self.weights, self.spec.clone(), pca, aconv, storage)
    }

    /// The settings record of a run of this job (`extract.json`, every shard's metadata):
    /// files by identity (absolute, links resolved), the weights by content.
    pub fn settings(
        &self,
        (storage, products): (Dtype, Products),
        decode: DecodeMode,
        format: OutputFormat,
        (feature_rows, feature_cols): (usize, usize),
    ) -> Result<ExtractSettings> {
        let o = &self.options;
        let r = &o.features;
        Ok(ExtractSettings {
            version: SETTINGS_VERSION,
            arch: self.arch,
            weights: absolute(&o.weights),
            weights_fingerprint: Some(self.weights_fingerprint()?.to_string()),
            layers: self.layers.clone(),
            pooling: r.pooling,
            channel_pooling: r.channel_pooling,
            window: r.window,
            levels: r.levels,
            norm: r.norm,
            size: o.size,
            decode,
            pca: o.pca.as_deref().map(absolute),
            pca_fingerprint: o
                .pca
                .as_deref()
                .map(ModelWeights::fingerprint)
                .transpose()?,
            aconv: o.aconv.as_deref().map(absolute),
            aconv_fingerprint: o
                .aconv
                .as_deref()
                .map(ModelWeights::fingerprint)
                .transpose()?,
            precision: storage,
            products,
            format,
            feature_rows,
            feature_cols,
        })
    }
}

/// `p` as settings record files: its identity (absolute, links resolved).
fn absolute(p: &Path) -> String {
    image_identity(p).display().to_string()
}
