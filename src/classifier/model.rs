//! A trained classifier on disk: a safetensors file with `weights` `[classes, d]` and `bias`
//! `[classes]` (f32), and under the metadata key `crosspool.classifier` a JSON object with the
//! class names, the model and its C, the cross-validation scores, and the settings of the
//! extraction it was trained on (which `classify` extracts new images with).

use super::cv::CvScore;
use super::linear::{Kind, LinearModel};
use crate::error::{Error, Result};
use crate::store::ExtractSettings;
use std::path::Path;

/// The metadata key.
pub const METADATA_KEY: &str = "crosspool.classifier";

/// A classifier and what it was trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    /// The model.
    pub model: LinearModel,
    /// Class names, in the order of the model's rows.
    pub classes: Vec<String>,
    /// Cross-validation scores of each C tried (empty when C was given).
    pub cv: Vec<CvScore>,
    /// Examples it was trained on.
    pub examples: usize,
    /// The extraction its features came from.
    pub settings: ExtractSettings,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    version: u32,
    kind: Kind,
    c: f64,
    classes: Vec<String>,
    cv: Vec<CvScore>,
    examples: usize,
    settings: serde_json::Value,
}

impl Classifier {
    /// The index of class `name`, or an error listing the classes.
    pub fn class_index(&self, name: &str) -> Result<usize> {
        self.classes.iter().position(|c| c == name).ok_or_else(|| {
            Error::Config(format!(
                "class '{name}' is not one the classifier knows ({})",
                self.classes.join(", ")
            ))
        })
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let settings: serde_json::Value = serde_json::from_str(&self.settings.to_json())
            .map_err(|e| Error::Config(format!("settings: {e}")))?;
        let meta = Meta {
            version: 1,
            kind: self.model.kind,
            c: self.model.c,
            classes: self.classes.clone(),
            cv: self.cv.clone(),
            examples: self.examples,
            settings,
        };
        let json = serde_json::to_string(&meta).map_err(|e| Error::Config(e.to_string()))?;
        let k = self.classes.len();
        crate::store::trained::save(
            path,
            METADATA_KEY,
            json,
            &[
                ("weights", vec![k, self.model.d], self.model.weights.clone()),
                ("bias", vec![k], self.model.bias.clone()),
            ],
        )
    }

    /// Reads a file [`Classifier::save`] wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file =
            crate::store::trained::load(path, "classifier", METADATA_KEY, "train-classifier")?;
        let m: Meta = serde_json::from_str(&file.json).map_err(|e| file.bad(e.to_string()))?;
        if m.version != 1 {
            return Err(file.bad(format!(
                "classifier format {} (this crosspool reads 1)",
                m.version
            )));
        }
        let settings =
            ExtractSettings::from_json(&m.settings.to_string(), &path.display().to_string())?;
        let (ws, weights) = file.take("weights")?;
        let (bs, bias) = file.take("bias")?;
        let k = m.classes.len();
        let d = settings.feature_rows * settings.feature_cols;
        if ws != [k, d] || bs != [k] {
            return Err(file.bad(format!(
                "tensor shapes weights {ws:?}, bias {bs:?} do not fit {k} classes of features of length {d}"
            )));
        }
        Ok(Classifier {
            model: LinearModel {
                kind: m.kind,
                c: m.c,
                weights,
                bias,
                d,
            },
            classes: m.classes,
            cv: m.cv,
            examples: m.examples,
            settings,
        })
    }
}
