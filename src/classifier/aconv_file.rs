//! A trained AConv layer on disk: a safetensors file with the 1x1 convolution's `weight`
//! `[filters, d, 1, 1]` (OIHW, as convolution weights are stored) and `bias` `[filters]`, the
//! softmax head it was trained with (`head.weight` `[classes, filters]`, `head.bias`), and
//! under the metadata key `crosspool.aconv` a JSON object saying what it was trained on: the
//! network, its layer, the weights' fingerprint, the input size and decoding, the classes
//! and the training settings with each epoch's objective and accuracy.

use super::aconv::{AConvLayer, Epoch, Training};
use crate::error::{Error, Result};
use crate::input::DecodeMode;
use crate::model::Arch;
use crate::weights::Conv2dWeights;
use std::path::Path;

/// The metadata key.
pub const METADATA_KEY: &str = "crosspool.aconv";

/// What the layer was trained on.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AConvMeta {
    /// File format (1).
    pub version: u32,
    /// Network.
    pub arch: Arch,
    /// The layer whose map the added layer convolves (fc6).
    pub layer: String,
    /// The weights file as the run saw it.
    pub weights: String,
    /// Its content fingerprint (`ModelWeights::fingerprint`).
    pub weights_fingerprint: String,
    /// Images were resized to `size` x `size`.
    pub size: u32,
    /// How JPEGs were decoded.
    pub decode: DecodeMode,
    /// Class names, in the order of the head's rows.
    pub classes: Vec<String>,
    /// Training images.
    pub images: usize,
    /// How it was trained.
    pub training: Training,
    /// Each epoch's objective and training accuracy.
    pub epochs: Vec<Epoch>,
}

/// A trained layer and its provenance.
#[derive(Clone, Debug, PartialEq)]
pub struct AConvFile {
    /// The parameters.
    pub layer: AConvLayer,
    /// What they were trained on.
    pub meta: AConvMeta,
}

impl AConvFile {
    /// The added layer as a convolution: 1x1, its filters, ReLU.
    pub fn to_conv(&self) -> Result<Conv2dWeights> {
        self.layer.to_conv(true)
    }

    /// Writes the file (the parameters rounded to f32).
    pub fn save(&self, path: &Path) -> Result<()> {
        let l = &self.layer;
        let json = serde_json::to_string(&self.meta).map_err(|e| Error::Config(e.to_string()))?;
        let (v, c) = l.head();
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        crate::store::trained::save(
            path,
            METADATA_KEY,
            json,
            &[
                ("weight", vec![l.filters, l.d, 1, 1], f32s(l.weight())),
                ("bias", vec![l.filters], f32s(l.bias())),
                ("head.weight", vec![l.classes, l.filters], f32s(v)),
                ("head.bias", vec![l.classes], f32s(c)),
            ],
        )
    }

    /// Reads a file [`AConvFile::save`] wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file =
            crate::store::trained::load(path, "AConv layer", METADATA_KEY, "train-aconv")?;
        let meta: AConvMeta =
            serde_json::from_str(&file.json).map_err(|e| file.bad(e.to_string()))?;
        if meta.version != 1 {
            return Err(file.bad(format!(
                "AConv format {} (this crosspool reads 1)",
                meta.version
            )));
        }
        let mut f64s = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let (shape, v) = file.take(name)?;
            Ok((shape, v.into_iter().map(f64::from).collect()))
        };
        let (ws, w) = f64s("weight")?;
        let (bs, b) = f64s("bias")?;
        let (vs, v) = f64s("head.weight")?;
        let (cs, c) = f64s("head.bias")?;
        let (f, k) = (bs.first().copied().unwrap_or(0), meta.classes.len());
        let d = ws.get(1).copied().unwrap_or(0);
        if ws != [f, d, 1, 1] || vs != [k, f] || cs != [k] || f == 0 || d == 0 {
            return Err(file.bad(format!(
                "tensor shapes weight {ws:?}, bias {bs:?}, head.weight {vs:?}, head.bias {cs:?} do not fit {k} classes"
            )));
        }
        let theta = [w, b, v, c].concat();
        if theta.iter().any(|x| !x.is_finite()) {
            return Err(file.bad("a parameter is NaN or infinite".into()));
        }
        Ok(AConvFile {
            layer: AConvLayer {
                filters: f,
                d,
                classes: k,
                theta,
            },
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_layer_loads_as_its_f32_rounding_and_runs_as_a_1x1_convolution() {
        let mut layer = AConvLayer::init(3, 5, 2, 4);
        layer
            .theta
            .iter_mut()
            .enumerate()
            .for_each(|(i, t)| *t += i as f64 * 1e-3);
        let file = AConvFile {
            layer: layer.clone(),
            meta: AConvMeta {
                version: 1,
                arch: Arch::Alexnet,
                layer: "fc6".into(),
                weights: "/w.safetensors".into(),
                weights_fingerprint: "fnv".into(),
                size: 287,
                decode: DecodeMode::Exact,
                classes: vec!["a".into(), "b".into()],
                images: 4,
                training: Training::default(),
                epochs: vec![Epoch {
                    epoch: 1,
                    objective: 0.5,
                    accuracy: 1.0,
                }],
            },
        };
        let path = std::env::temp_dir().join(format!("crosspool-aconv-{}.st", std::process::id()));
        file.save(&path).unwrap();
        let back = AConvFile::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.meta, file.meta);
        let rounded: Vec<f64> = layer.theta.iter().map(|&t| t as f32 as f64).collect();
        assert_eq!(back.layer.theta, rounded);
        let conv = back.to_conv().unwrap();
        assert_eq!(
            (conv.spec.in_c, conv.spec.out_c, conv.spec.relu),
            (5, 3, true)
        );
        // Filter i's weights are row i of W.
        assert_eq!(
            conv.weight[5..10],
            layer.weight()[5..10]
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>()[..]
        );
        assert!(AConvFile::load(Path::new("/nonexistent.st")).is_err());
    }
}
