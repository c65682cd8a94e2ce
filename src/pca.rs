//! PCA of local features: fitted from first and second moments accumulated on the GPU,
//! eigendecomposed on the CPU (faer), stored as safetensors, and applied on the GPU as a
//! convolution (`W (x - mean)` over the local window is a conv with weights W, bias -W mean).

use crate::error::{Error, Result};
use crate::pooling::LocalWindow;
use crate::shape::{Conv2dSpec, Window2d};
use crate::weights::Conv2dWeights;

/// A fitted PCA of the local features of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    /// Network the features came from.
    pub arch: String,
    /// Layer of the local features.
    pub layer: String,
    /// Local window the features span.
    pub window: LocalWindow,
    /// Channels of the layer.
    pub channels: usize,
    /// Mean local feature, `window.feature_len(channels)` values.
    pub mean: Vec<f32>,
    /// Projection `[dims][feature_len]`: eigenvectors of the covariance, largest eigenvalue
    /// first, each with its largest-magnitude entry positive (so fits are reproducible).
    pub components: Vec<f32>,
    /// Every eigenvalue of the covariance, descending.
    pub eigenvalues: Vec<f32>,
    /// Output dimensions kept.
    pub dims: usize,
    /// Local features the fit saw.
    pub units: u64,
}

/// Running sums of local features for a PCA fit, in f64.
#[derive(Clone, Debug)]
pub struct MomentAccumulator {
    /// Local-feature length.
    pub feat: usize,
    /// Sum of local features.
    pub sum: Vec<f64>,
    /// Sum of their outer products, `[feat][feat]`.
    pub second: Vec<f64>,
    /// Number of local features.
    pub count: u64,
}

impl MomentAccumulator {
    /// Empty sums for features of length `feat`.
    pub fn new(feat: usize) -> Self {
        MomentAccumulator {
            feat,
            sum: vec![0.0; feat],
            second: vec![0.0; feat * feat],
            count: 0,
        }
    }

    /// Adds one batch's sums (computed in f32 on the GPU) of `count` local features.
    pub fn add(&mut self, sum: &[f32], second: &[f32], count: u64) {
        for (a, b) in self.sum.iter_mut().zip(sum) {
            *a += *b as f64;
        }
        for (a, b) in self.second.iter_mut().zip(second) {
            *a += *b as f64;
        }
        self.count += count;
    }

    /// Adds the sums of `other` (another device's share of the same fit).
    pub fn merge(&mut self, other: &MomentAccumulator) -> Result<()> {
        if other.feat != self.feat {
            return Err(Error::Config(format!(
                "moments of features of length {} and {} cannot be added",
                self.feat, other.feat
            )));
        }
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.second.iter_mut().zip(&other.second) {
            *a += b;
        }
        self.count += other.count;
        Ok(())
    }
}

impl Pca {
    /// Fits from accumulated moments: the covariance `E[x x^T] - mean mean^T`, its
    /// eigenvectors sorted by eigenvalue. `dims = None` keeps all (decorrelation only, as the
    /// paper does for conv layers); `Some(n)` keeps the top n.
    pub fn fit(
        m: &MomentAccumulator,
        arch: &str,
        layer: &str,
        window: LocalWindow,
        channels: usize,
        dims: Option<usize>,
    ) -> Result<Self> {
        let f = m.feat;
        if f != window.feature_len(channels) {
            return Err(Error::Config(format!(
                "moments of length {f} do not match a {}x{} window of {channels} channels",
                window.h, window.w
            )));
        }
        if m.count < 2 {
            return Err(Error::Config(format!(
                "PCA needs at least 2 local features, got {}",
                m.count
            )));
        }
        let dims = dims.unwrap_or(f);
        if dims == 0 || dims > f {
            return Err(Error::Config(format!(
                "PCA dimensions must be between 1 and {f}, got {dims}"
            )));
        }
        let n = m.count as f64;
        let mean: Vec<f64> = m.sum.iter().map(|s| s / n).collect();
        let cov = faer::Mat::<f64>::from_fn(f, f, |i, j| {
            // Symmetrise: the GPU sums of x_i x_j and x_j x_i round differently.
            let s = 0.5 * (m.second[i * f + j] + m.second[j * f + i]);
            s / n - mean[i] * mean[j]
        });
        // faer's blocked, multithreaded solver: fc6's 4096 x 4096 covariance (FC-FC pooling)
        // in seconds, where an unblocked one takes a minute.
        let eig = cov
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| Error::Config(format!("PCA eigendecomposition failed: {e:?}")))?;
        let (values, vectors) = (eig.S().column_vector(), eig.U());
        let mut order: Vec<usize> = (0..f).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let mut components = Vec::with_capacity(dims * f);
        for &k in &order[..dims] {
            let v = vectors.col(k);
            let big = v
                .iter()
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                .unwrap_or(1.0);
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            components.extend(v.iter().map(|x| (x * sign) as f32));
        }
        Ok(Pca {
            arch: arch.to_string(),
            layer: layer.to_string(),
            window,
            channels,
            mean: mean.iter().map(|&x| x as f32).collect(),
            components,
            eigenvalues: order.iter().map(|&k| values[k].max(0.0) as f32).collect(),
            dims,
            units: m.count,
        })
    }

    /// Local-feature length the PCA takes.
    pub fn feature_len(&self) -> usize {
        self.window.feature_len(self.channels)
    }

    /// The projection as a convolution over the layer: `dims` outputs, the local window as
    /// kernel with zero padding (matching the zero-padded neighbourhood), bias `-W mean`.
    pub fn to_conv(&self) -> Result<Conv2dWeights> {
        let (m, n, c, f) = (
            self.window.h,
            self.window.w,
            self.channels,
            self.feature_len(),
        );
        let spec = Conv2dSpec {
            in_c: c,
            out_c: self.dims,
            window: Window2d {
                kh: m,
                kw: n,
                stride_h: 1,
                stride_w: 1,
                pad_h: m / 2,
                pad_w: n / 2,
            },
            relu: false,
        };
        let mut weight = vec![0.0f32; spec.weight_len()];
        let mut bias = vec![0.0f32; self.dims];
        for o in 0..self.dims {
            let row = &self.components[o * f..(o + 1) * f];
            // Feature index (dy * n + dx) * c + ch -> OIHW index ((o * c + ch) * m + dy) * n + dx.
            for (fi, &w) in row.iter().enumerate() {
                let (d, ch) = (fi / c, fi % c);
                weight[((o * c + ch) * m + d / n) * n + d % n] = w;
            }
            bias[o] = -row
                .iter()
                .zip(&self.mean)
                .map(|(w, mu)| *w as f64 * *mu as f64)
                .sum::<f64>() as f32;
        }
        Conv2dWeights::new(spec, weight, bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a tilted line plus small noise: the first component is the line's direction.
    #[test]
    fn fit_finds_the_main_direction_and_round_trips() {
        let mut m = MomentAccumulator::new(2);
        for i in 0..100 {
            let t = i as f32 / 10.0 - 5.0;
            let e = if i % 2 == 0 { 0.01 } else { -0.01 };
            let x = [3.0 + 0.6 * t - 0.8 * e, 1.0 + 0.8 * t + 0.6 * e];
            let second: Vec<f32> = (0..4).map(|k| x[k / 2] * x[k % 2]).collect();
            m.add(&x, &second, 1);
        }
        let p = Pca::fit(&m, "vgg16", "conv5_2", LocalWindow::UNIT, 2, None).unwrap();
        assert!(
            (p.components[0] - 0.6).abs() < 1e-4 && (p.components[1] - 0.8).abs() < 1e-4,
            "{:?}",
            p.components
        );
        assert!(p.eigenvalues[0] > 1000.0 * p.eigenvalues[1]);
        assert!((p.mean[0] - (3.0 - 0.6 * 0.05)).abs() < 1e-4);
        let dir = std::env::temp_dir().join(format!("crosspool-pca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.safetensors");
        p.save(&path).unwrap();
        assert_eq!(Pca::load(&path).unwrap(), p);
        // One NaN in a saved PCA: refused on loading, naming the tensor.
        let mut broken = p.clone();
        broken.components[1] = f32::NAN;
        broken.save(&path).unwrap();
        let e = Pca::load(&path).unwrap_err().to_string();
        assert!(e.contains("'components' holds 1 non-finite"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
