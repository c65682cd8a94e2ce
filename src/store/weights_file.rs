//! Reading a network's weights from a safetensors file (f32, f16 or bf16), memory-mapped,
//! with every tensor checked against the architecture before use: the file side of
//! [`ModelWeights`], whose type lives with the networks in `crate::model`.

use crate::error::{Error, Result};
use crate::model::{Arch, LayerKind, ModelWeights, Preprocess};
use crate::store::tensor_file::TensorFile;
use crate::weights::Conv2dWeights;
use std::collections::HashMap;
use std::path::Path;

/// Metadata key naming the architecture.
pub const KEY_ARCH: &str = "crosspool.arch";

impl ModelWeights {
    /// Loads `path`. The architecture comes from the file's metadata or `arch` (an error if
    /// both are given and differ, or neither is). Layers are loaded in order up to and
    /// including `last` (all conv layers if `None`); fully connected layers are loaded only
    /// when `last` names them, since they hold most of the bytes.
    pub fn load(path: &Path, arch: Option<Arch>, last: Option<&str>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        // SAFETY: the map is read-only; as with any mmap, another process truncating the file
        // while we read would fault, which is the accepted trade for not copying ~0.5 GB.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
        Self::from_bytes(&map, path, arch, last)
    }

    /// The architecture `path` holds (its metadata, checked against `arch`, or `arch`), read
    /// from the file's header alone: for choosing which layers to load.
    pub fn arch_of(path: &Path, arch: Option<Arch>) -> Result<Arch> {
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        // SAFETY: as in `load`; only the header is read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
        let err = |message: String| Error::Weights {
            path: path.display().to_string(),
            message,
        };
        let file = TensorFile::parse(&map).map_err(|e| err(not_readable(&e)))?;
        resolve_arch(&file.meta, arch, &err)
    }

    /// A fingerprint of the file's whole content, `fnv1a64-words:<hex>:<bytes>`: recorded by
    /// `extract` so that resuming with a changed file behind the same path is refused. The
    /// hash is FNV-1a over little-endian 64-bit words (the tail zero-padded), stable across
    /// versions and platforms, and fast enough to run over the file each time (a few
    /// hundred MB/s of memory-mapped reading at worst).
    pub fn fingerprint(path: &Path) -> Result<String> {
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        // SAFETY: as in `load`: the map is read while the file is open and not written.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
        Ok(format!(
            "fnv1a64-words:{:016x}:{}",
            fnv1a64_words(&map),
            map.len()
        ))
    }

    /// As [`ModelWeights::load`], from bytes already in memory; `path` is used in messages.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        arch: Option<Arch>,
        last: Option<&str>,
    ) -> Result<Self> {
        let err = |message: String| Error::Weights {
            path: path.display().to_string(),
            message,
        };
        let tensors = TensorFile::parse(bytes).map_err(|e| err(not_readable(&e)))?;
        let meta = &tensors.meta;

        let arch = resolve_arch(meta, arch, &err)?;
        let (preprocess, preprocess_assumed) = match Preprocess::from_metadata(meta)? {
            Some(p) => (p, false),
            None => (Preprocess::TORCHVISION, true),
        };

        let all = arch.layers();
        let end = crate::model::layers_to_load(arch, last)?;
        let mut layers = Vec::new();
        for layer in &all[..end] {
            let LayerKind::Conv {
                spec,
                tensor,
                from_linear,
                batch_norm,
            } = &layer.kind
            else {
                continue;
            };
            let w = spec.window;
            let wshape = if *from_linear {
                vec![spec.out_c, spec.in_c * w.kh * w.kw]
            } else {
                vec![spec.out_c, spec.in_c, w.kh, w.kw]
            };
            let read =
                |name: &str, shape: &[usize]| read_f32(&tensors, name, shape, &layer.name, &err);
            let weight = read(&format!("{tensor}.weight"), &wshape)?;
            let (weight, bias) = match batch_norm {
                None => (weight, read(&format!("{tensor}.bias"), &[spec.out_c])?),
                Some(bn) => {
                    if tensors.tensor(&format!("{tensor}.bias")).is_some() {
                        return Err(err(format!(
                            "tensor '{tensor}.bias' (layer {}) is not expected: torchvision's {arch} convolutions have no bias (batch norm {bn} follows)",
                            layer.name
                        )));
                    }
                    let c = [spec.out_c];
                    let norm = BatchNorm {
                        gamma: read(&format!("{bn}.weight"), &c)?,
                        beta: read(&format!("{bn}.bias"), &c)?,
                        mean: read(&format!("{bn}.running_mean"), &c)?,
                        var: read(&format!("{bn}.running_var"), &c)?,
                    };
                    if let Some(i) = norm.var.iter().position(|&v| v < 0.0) {
                        return Err(err(format!(
                            "tensor '{bn}.running_var' (layer {}) holds a negative variance at index {i}",
                            layer.name
                        )));
                    }
                    norm.fold(&weight)
                }
            };
            layers.push((layer.name.clone(), Conv2dWeights::new(*spec, weight, bias)?));
        }
        Ok(ModelWeights {
            arch,
            preprocess,
            preprocess_assumed,
            layers,
            source: path.to_path_buf(),
        })
    }
}

/// Batch norm's epsilon in torchvision's ResNets (`nn.BatchNorm2d`'s default).
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// A batch norm's parameters and running statistics, per channel.
struct BatchNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl BatchNorm {
    /// The preceding bias-free convolution's `weight` (`[out][...]`) with the norm folded in:
    /// `s = γ / √(var + ε)`, weight `w s`, bias `β - mean s`, in f64 and rounded once, so that
    /// the folded layer is the torchvision pair to f32 rounding of its values.
    fn fold(&self, weight: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let per_out = weight.len() / self.gamma.len().max(1);
        let scale: Vec<f64> = (0..self.gamma.len())
            .map(|o| self.gamma[o] as f64 / (self.var[o] as f64 + BATCH_NORM_EPS).sqrt())
            .collect();
        let weight = weight
            .iter()
            .enumerate()
            .map(|(i, &w)| (w as f64 * scale[i / per_out]) as f32)
            .collect();
        let bias = (0..scale.len())
            .map(|o| (self.beta[o] as f64 - self.mean[o] as f64 * scale[o]) as f32)
            .collect();
        (weight, bias)
    }
}

/// The architecture named by the metadata, or `arch`; an error if both are given and differ,
/// or neither is.
fn resolve_arch(
    meta: &HashMap<String, String>,
    arch: Option<Arch>,
    err: &dyn Fn(String) -> Error,
) -> Result<Arch> {
    match (meta.get(KEY_ARCH).map(|s| Arch::parse(s)).transpose()?, arch) {
        (Some(f), Some(a)) if f != a => Err(err(format!(
            "the file holds {f} weights but {a} was requested"
        ))),
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => Err(err(format!(
            "the file does not say which network it is ({KEY_ARCH} metadata); pass the model explicitly"
        ))),
    }
}

/// Why a file that does not parse cannot be read.
fn not_readable(e: &str) -> String {
    format!("not a readable safetensors file ({e}); is it truncated or another format?")
}

/// Reads tensor `name`, checking its shape against `shape`, converting f16/bf16 to f32.
fn read_f32(
    tensors: &TensorFile<'_>,
    name: &str,
    shape: &[usize],
    layer: &str,
    err: &dyn Fn(String) -> Error,
) -> Result<Vec<f32>> {
    let t = tensors.tensor(name).ok_or_else(|| {
        err(format!(
            "tensor '{name}' (layer {layer}) is missing; expected shape {shape:?}"
        ))
    })?;
    if t.shape != shape {
        return Err(err(format!(
            "tensor '{name}' (layer {layer}) has shape {:?}, expected {shape:?}",
            t.shape
        )));
    }
    let Some(values) = t.to_f32() else {
        return Err(err(format!(
            "tensor '{name}' (layer {layer}) has dtype {}; crosspool reads F32, F16 and BF16",
            t.dtype_name
        )));
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(format!(
            "tensor '{name}' (layer {layer}) holds a non-finite value at index {i}"
        )));
    }
    Ok(values)
}

/// FNV-1a over 64-bit little-endian words, the last one zero-padded.
fn fnv1a64_words(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(PRIME);
    }
    h
}
