//! The layout both trained files share (classifiers, AConv layers): f32 tensors and one JSON
//! object under a metadata key that says what wrote them, in a safetensors container.

use super::tensor_file::{self, Element, TensorFile};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Writes f32 `tensors` (name, shape, values) with `json` under metadata `key`, atomically.
pub fn save(
    path: &Path,
    key: &str,
    json: String,
    tensors: &[(&str, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, v)| (*name, Element::F32, shape.clone(), bytemuck::cast_slice(v)))
        .collect();
    tensor_file::write(path, HashMap::from([(key.to_string(), json)]), &views)
}

/// A file [`save`] wrote: its JSON and its tensors by name.
pub struct Loaded {
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

    /// Tensor `name`: shape and values, all finite (a NaN weight would score every image
    /// NaN, and its prediction be one class for all).
    pub fn take(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, values) = self
            .tensors
            .remove(name)
            .ok_or_else(|| self.bad(format!("no f32 tensor '{name}'")))?;
        let bad = values.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            return Err(self.bad(format!(
                "tensor '{name}' holds {bad} non-finite value(s) (NaN or infinity): the file is damaged; train it again"
            )));
        }
        Ok((shape, values))
    }
}

/// Reads a file [`save`] wrote with metadata `key`; `what` names the kind of file and
/// `writer` the command that writes it, in errors.
pub fn load(path: &Path, what: &'static str, key: &str, writer: &str) -> Result<Loaded> {
    let bad = |m: String| Error::BadFile {
        path: path.display().to_string(),
        what,
        message: m,
    };
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let file = TensorFile::parse(&bytes).map_err(bad)?;
    let json = file
        .meta
        .get(key)
        .ok_or_else(|| {
            bad(format!(
                "no {key} metadata: not written by crosspool {writer}"
            ))
        })?
        .clone();
    let tensors = file
        .tensors()
        .filter(|(_, t)| t.element == Element::F32)
        .filter_map(|(name, t)| Some((name.to_string(), (t.shape.clone(), t.to_f32()?))))
        .collect();
    Ok(Loaded {
        path: path.display().to_string(),
        what,
        json,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_value_is_refused_on_loading() {
        let dir = std::env::temp_dir().join(format!("crosspool-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.clf");
        let w = vec![1.0, f32::NAN, 2.0, f32::INFINITY];
        save(&path, "k", "{}".into(), &[("w", vec![2, 2], w)]).unwrap();
        let mut f = load(&path, "classifier", "k", "test").unwrap();
        let e = f.take("w").unwrap_err().to_string();
        assert!(e.contains("'w' holds 2 non-finite"), "{e}");
        save(&path, "k", "{}".into(), &[("w", vec![2], vec![1.0, 2.0])]).unwrap();
        let mut f = load(&path, "classifier", "k", "test").unwrap();
        assert_eq!(f.take("w").unwrap(), (vec![2], vec![1.0, 2.0]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
