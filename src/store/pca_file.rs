//! The PCA file: safetensors holding `components`, `eigenvalues` and `mean` (f32), with the
//! network, layer, window, channels and fit size in `crosspool.pca.*` metadata. The file
//! side of [`Pca`], whose type and fit live in `crate::pca`.

use crate::error::{Error, Result};
use crate::pca::Pca;
use crate::pooling::LocalWindow;
use crate::store::tensor_file::{self, Element, TensorFile};
use std::collections::HashMap;
use std::path::Path;

impl Pca {
    /// Writes the PCA to `path` (safetensors; written to a temporary file and renamed).
    pub fn save(&self, path: &Path) -> Result<()> {
        let f = self.feature_len();
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (mean, comp, eig) = (
            bytes(&self.mean),
            bytes(&self.components),
            bytes(&self.eigenvalues),
        );
        let tensors = [
            ("components", Element::F32, vec![self.dims, f], &comp[..]),
            ("eigenvalues", Element::F32, vec![f], &eig[..]),
            ("mean", Element::F32, vec![f], &mean[..]),
        ];
        let meta = HashMap::from([
            ("crosspool.pca.arch".to_string(), self.arch.clone()),
            ("crosspool.pca.layer".to_string(), self.layer.clone()),
            (
                "crosspool.pca.window".to_string(),
                format!("{}x{}", self.window.h, self.window.w),
            ),
            (
                "crosspool.pca.channels".to_string(),
                self.channels.to_string(),
            ),
            ("crosspool.pca.units".to_string(), self.units.to_string()),
        ]);
        tensor_file::write(path, meta, &tensors)
    }

    /// Reads a PCA written by [`Pca::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let err = |m: String| Error::BadFile {
            path: path.display().to_string(),
            what: "PCA file",
            message: m,
        };
        let st = TensorFile::parse(&bytes).map_err(|e| err(format!("not a PCA file ({e})")))?;
        let meta = &st.meta;
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| err(format!("metadata {k} missing: not a crosspool PCA file")))
        };
        let window = get("crosspool.pca.window")?;
        let (h, w) = window
            .split_once('x')
            .ok_or_else(|| err(format!("bad window '{window}'")))?;
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| err(format!("bad number '{s}'")))
        };
        let window = LocalWindow::new(num(h)?, num(w)?)?;
        let channels = num(&get("crosspool.pca.channels")?)?;
        let f = window.feature_len(channels);
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .ok_or_else(|| err(format!("tensor '{name}' missing")))?;
            let values = match (t.element, t.to_f32()) {
                (Element::F32, Some(v)) => v,
                _ => {
                    return Err(err(format!(
                        "tensor '{name}' is {}, expected F32",
                        t.dtype_name
                    )))
                }
            };
            // A NaN would make every projected feature NaN, stored as if it were fine.
            let bad = values.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                return Err(err(format!(
                    "tensor '{name}' holds {bad} non-finite value(s) (NaN or infinity): the file is damaged; fit the PCA again"
                )));
            }
            Ok((t.shape.clone(), values))
        };
        let (cs, components) = read("components")?;
        let (ms, mean) = read("mean")?;
        let (es, eigenvalues) = read("eigenvalues")?;
        if cs.len() != 2 || cs[1] != f || ms != [f] || es != [f] || cs[0] == 0 || cs[0] > f {
            return Err(err(format!("tensor shapes components {cs:?}, mean {ms:?}, eigenvalues {es:?} do not fit features of length {f}")));
        }
        Ok(Pca {
            arch: get("crosspool.pca.arch")?,
            layer: get("crosspool.pca.layer")?,
            window,
            channels,
            mean,
            dims: cs[0],
            components,
            eigenvalues,
            units: get("crosspool.pca.units")?.parse().unwrap_or(0),
        })
    }
}
