//! How pixels become network input, stored in each weight file's metadata so that a model is
//! always fed the way it was trained.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// Channel order the network expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Red, green, blue (torchvision).
    Rgb,
    /// Blue, green, red (Caffe models).
    Bgr,
}

/// Per-channel affine map from 8-bit pixels: `(pixel * scale - mean[c]) / std[c]`, with `c` in
/// the network's channel order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Channel order of the network input.
    pub order: ChannelOrder,
    /// Factor applied to the 0-255 pixel value first (1/255 for torchvision, 1 for Caffe).
    pub scale: f32,
    /// Mean subtracted, in the network's channel order and the scaled units.
    pub mean: [f32; 3],
    /// Divisor after the mean, same order and units.
    pub std: [f32; 3],
}

const KEY_ORDER: &str = "crosspool.channel_order";
const KEY_SCALE: &str = "crosspool.pixel_scale";
const KEY_MEAN: &str = "crosspool.mean";
const KEY_STD: &str = "crosspool.std";

impl Preprocess {
    /// torchvision's ImageNet models: RGB in [0, 1], ImageNet mean and std.
    pub const TORCHVISION: Preprocess = Preprocess {
        order: ChannelOrder::Rgb,
        scale: 1.0 / 255.0,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// The original Caffe VGG models: BGR in [0, 255] minus the ImageNet pixel mean.
    pub const CAFFE_VGG: Preprocess = Preprocess {
        order: ChannelOrder::Bgr,
        scale: 1.0,
        mean: [103.939, 116.779, 123.68],
        std: [1.0, 1.0, 1.0],
    };

    /// Metadata entries describing this preprocessing.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let join = |v: [f32; 3]| v.map(|x| x.to_string()).join(",");
        HashMap::from([
            (
                KEY_ORDER.to_string(),
                match self.order {
                    ChannelOrder::Rgb => "rgb",
                    ChannelOrder::Bgr => "bgr",
                }
                .to_string(),
            ),
            (KEY_SCALE.to_string(), self.scale.to_string()),
            (KEY_MEAN.to_string(), join(self.mean)),
            (KEY_STD.to_string(), join(self.std)),
        ])
    }

    /// Reads the preprocessing from weight-file metadata; `None` if the file has none.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<Self>> {
        let Some(order) = meta.get(KEY_ORDER) else {
            return Ok(None);
        };
        let order = match order.as_str() {
            "rgb" => ChannelOrder::Rgb,
            "bgr" => ChannelOrder::Bgr,
            other => return Err(bad(KEY_ORDER, other, "rgb or bgr")),
        };
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(k, "(missing)", "a value"));
        let scale: f32 = get(KEY_SCALE)?
            .parse()
            .map_err(|_| bad(KEY_SCALE, &meta[KEY_SCALE], "a number"))?;
        let triple = |k: &str| -> Result<[f32; 3]> {
            let s = get(k)?;
            let v: Vec<f32> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(k, s, "three comma-separated numbers"))?;
            v.try_into()
                .map_err(|_| bad(k, s, "three comma-separated numbers"))
        };
        let p = Preprocess {
            order,
            scale,
            mean: triple(KEY_MEAN)?,
            std: triple(KEY_STD)?,
        };
        if p.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(bad(KEY_STD, &meta[KEY_STD], "non-zero finite numbers"));
        }
        Ok(Some(p))
    }

    /// Converts interleaved 8-bit RGB pixels to network input (HWC, f32, network order).
    pub fn apply(&self, rgb: &[u8], out: &mut Vec<f32>) {
        out.clear();
        out.reserve(rgb.len());
        let src = match self.order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let inv_std = self.std.map(|s| 1.0 / s);
        for px in rgb.chunks_exact(3) {
            for c in 0..3 {
                out.push((px[src[c]] as f32 * self.scale - self.mean[c]) * inv_std[c]);
            }
        }
    }
}

fn bad(key: &str, value: &str, want: &str) -> Error {
    Error::Config(format!(
        "weight-file metadata {key}={value} is invalid: expected {want}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips() {
        for p in [Preprocess::TORCHVISION, Preprocess::CAFFE_VGG] {
            assert_eq!(
                Preprocess::from_metadata(&p.to_metadata()).unwrap(),
                Some(p)
            );
        }
        assert_eq!(Preprocess::from_metadata(&HashMap::new()).unwrap(), None);
        let mut m = Preprocess::CAFFE_VGG.to_metadata();
        m.insert(KEY_MEAN.into(), "1,2".into());
        assert!(Preprocess::from_metadata(&m).is_err());
    }

    #[test]
    fn caffe_swaps_to_bgr_and_subtracts_the_mean() {
        let mut out = Vec::new();
        Preprocess::CAFFE_VGG.apply(&[200, 100, 50], &mut out);
        assert_eq!(out, vec![50.0 - 103.939, 100.0 - 116.779, 200.0 - 123.68]);
        Preprocess::TORCHVISION.apply(&[255, 0, 0], &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out[2] - (-0.406 / 0.225)).abs() < 1e-6);
    }
}
