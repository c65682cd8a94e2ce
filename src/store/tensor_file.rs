//! The safetensors container, in one place: crosspool's own files (PCA, classifiers, AConv
//! layers, the retrieval index) are written with [`write`] and read with [`TensorFile`], and
//! so are network weights. The modules that own a format keep its metadata keys and checks;
//! the bytes on disk are spelled here, so no module outside `store/` names `safetensors`.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// A tensor's element type as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit unsigned word (sign codes).
    U32,
    /// Anything else (named in errors by [`View::dtype_name`]).
    Other,
}

impl Element {
    fn of(d: safetensors::Dtype) -> Self {
        match d {
            safetensors::Dtype::F32 => Element::F32,
            safetensors::Dtype::F16 => Element::F16,
            safetensors::Dtype::BF16 => Element::BF16,
            safetensors::Dtype::U32 => Element::U32,
            _ => Element::Other,
        }
    }

    fn dtype(self) -> Result<safetensors::Dtype> {
        match self {
            Element::F32 => Ok(safetensors::Dtype::F32),
            Element::F16 => Ok(safetensors::Dtype::F16),
            Element::BF16 => Ok(safetensors::Dtype::BF16),
            Element::U32 => Ok(safetensors::Dtype::U32),
            Element::Other => Err(Error::Config(
                "a tensor of an unnamed element type cannot be written".into(),
            )),
        }
    }
}

/// One tensor of a [`TensorFile`], borrowing the file's bytes.
pub struct View<'a> {
    /// Element type.
    pub element: Element,
    /// Its name in safetensors' spelling (`F32`, `I64`, ...), for errors.
    pub dtype_name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// The raw little-endian bytes.
    pub data: &'a [u8],
    /// Where they start in the file (for memory-mapping them elsewhere).
    pub offset: usize,
}

impl View<'_> {
    /// The values as f32, converting f16 and bf16; `None` for other element types.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let d = self.data;
        match self.element {
            Element::F32 => Some(
                d.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            Element::F16 => Some(
                d.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Element::BF16 => Some(
                d.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            Element::U32 | Element::Other => None,
        }
    }

    /// The values as u32 words; `None` unless the tensor is U32.
    pub fn to_u32(&self) -> Option<Vec<u32>> {
        (self.element == Element::U32).then(|| bytemuck::pod_collect_to_vec(self.data))
    }
}

/// A safetensors file's metadata and tensors, parsed from bytes the caller holds (read or
/// memory-mapped).
pub struct TensorFile<'a> {
    /// The metadata (`__metadata__`), empty if the file has none.
    pub meta: HashMap<String, String>,
    tensors: HashMap<String, View<'a>>,
}

impl<'a> TensorFile<'a> {
    /// Parses a whole file; the error is the parser's message, for the caller to say which
    /// kind of file was expected.
    pub fn parse(bytes: &'a [u8]) -> std::result::Result<Self, String> {
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                // The view borrows `st`; its data is a slice of `bytes`, found again by offset
                // so that it outlives the parser.
                let data = t.data();
                let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
                let view = View {
                    element: Element::of(t.dtype()),
                    dtype_name: format!("{:?}", t.dtype()),
                    shape: t.shape().to_vec(),
                    data: &bytes[start..start + data.len()],
                    offset: start,
                };
                (name, view)
            })
            .collect();
        Ok(TensorFile {
            meta: header.metadata().clone().unwrap_or_default(),
            tensors,
        })
    }

    /// Tensor `name`, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<&View<'a>> {
        self.tensors.get(name)
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &View<'a>)> {
        self.tensors.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// A tensor to write: name, element type, shape and little-endian bytes.
pub type TensorOut<'a> = (&'a str, Element, Vec<usize>, &'a [u8]);

/// The bytes of a safetensors file holding `tensors` and `meta`.
pub fn serialize(meta: HashMap<String, String>, tensors: &[TensorOut<'_>]) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| Error::Config(format!("safetensors: {e}"));
    let views = tensors
        .iter()
        .map(|(name, element, shape, bytes)| {
            let t = safetensors::tensor::TensorView::new(element.dtype()?, shape.clone(), bytes)
                .map_err(bad)?;
            Ok((name.to_string(), t))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(bad)
}

/// Writes a safetensors file holding `tensors` and `meta` to `path`, atomically (see
/// [`write_atomic`]).
pub fn write(path: &Path, meta: HashMap<String, String>, tensors: &[TensorOut<'_>]) -> Result<()> {
    write_atomic(path, &serialize(meta, tensors)?)
}

/// Writes `data` to a temporary name beside `path` and renames it, so that `path` is either
/// absent or complete.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(Error::write(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::write(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_metadata_read_back_as_written() {
        let f = [1.5f32, -2.0, 3.25];
        let w = [7u32, 0xFFFF_FFFF];
        let h: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        let bytes = serialize(
            meta.clone(),
            &[
                ("f", Element::F32, vec![3], bytemuck::cast_slice(&f)),
                ("w", Element::U32, vec![1, 2], bytemuck::cast_slice(&w)),
                ("h", Element::F16, vec![2], &h),
            ],
        )
        .unwrap();
        let file = TensorFile::parse(&bytes).unwrap();
        assert_eq!(file.meta, meta);
        let t = file.tensor("f").unwrap();
        assert_eq!(t.to_f32().unwrap(), f);
        assert_eq!(
            &bytes[t.offset..t.offset + 12],
            bytemuck::cast_slice::<f32, u8>(&f)
        );
        assert_eq!(file.tensor("f").unwrap().to_u32(), None);
        let words = file.tensor("w").unwrap();
        assert_eq!(
            (words.shape.as_slice(), words.to_u32().unwrap()),
            (&[1, 2][..], w.to_vec())
        );
        assert_eq!(file.tensor("h").unwrap().to_f32().unwrap(), [0.5, -1.0]);
        assert!(file.tensor("x").is_none());
        assert_eq!(file.tensors().count(), 3);
        assert!(TensorFile::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(TensorFile::parse(b"not a file").is_err());
    }
}
