//! The safetensors layout both trained files share (classifiers, AConv layers): f32 tensors
//! and one JSON object under a metadata key that says what wrote them.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Writes f32 `tensors` (name, shape, values) with `json` under metadata `key`, atomically.
pub(crate) fn save(
    path: &Path,
    key: &str,
    json: String,
    tensors: &[(&str, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| bytemuck::cast_slice(v).to_vec())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|t| (name.to_string(), t))
                .map_err(|e| Error::Config(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, Some(HashMap::from([(key.to_string(), json)])))
        .map_err(|e| Error::Config(e.to_string()))?;
    crate::output::write_atomic(path, &out)
}

/// A file [`save`] wrote: its JSON and its tensors by name.
pub(crate) struct Loaded {
    path: String,
    what: &'static str,
    /// The metadata JSON.
    pub json: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Loaded {
    /// An error about this file.
    pub fn bad(&self, message: String) -> Error {
        Error::BadFile {
            path: self.path.clone(),
            what: self.what,
            message,
        }
    }

    /// Tensor `name`: shape and values.
    pub fn take(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.tensors
            .remove(name)
            .ok_or_else(|| self.bad(format!("no f32 tensor '{name}'")))
    }
}

/// Reads a file [`save`] wrote with metadata `key`; `what` names the kind of file and
/// `writer` the command that writes it, in errors.
pub(crate) fn load(path: &Path, what: &'static str, key: &str, writer: &str) -> Result<Loaded> {
    let bad = |m: String| Error::BadFile {
        path: path.display().to_string(),
        what,
        message: m,
    };
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| {
            bad(format!(
                "no {key} metadata: not written by crosspool {writer}"
            ))
        })?
        .clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensors = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| {
            (
                name,
                (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data())),
            )
        })
        .collect();
    Ok(Loaded {
        path: path.display().to_string(),
        what,
        json,
        tensors,
    })
}
