//! The paper's added convolutional layer for AConv pooling (journal version, section 3.4):
//! a 1x1 convolution with few filters (100 in the paper) on a fully connected layer run as a
//! dense convolution (fc6), trained on the target data through spatial max-pooling and a
//! softmax (logistic regression) layer with the cross-entropy loss. Its ReLU activations then
//! guide cross-layer pooling of fc6's local features.
//!
//! Per image, with `f_p` fc6's activations at position `p` of its map:
//! `a_pi = relu(W_i·f_p + b_i)`, `m_i = max_p a_pi`, `z = V m + c`,
//! `loss = −log softmax(z)_y`; the objective is the mean loss plus `λ/2 (|W|² + |V|²)`,
//! minimised by minibatch SGD with momentum. Sums run in f64; maps are the f32 they are read
//! back in.

use super::rng::Rng;
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Window2d};
use crate::weights::Conv2dWeights;

/// The layer's maps: `n` images of `units` positions of `d` values, with class indices.
pub struct Maps<'a> {
    /// `n * units * d` values, `[image][position][channel]`.
    pub x: &'a [f32],
    /// Positions per image.
    pub units: usize,
    /// Channels.
    pub d: usize,
    /// Class of each image, `0..classes`.
    pub y: &'a [usize],
    /// Number of classes.
    pub classes: usize,
}

impl Maps<'_> {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn image(&self, i: usize) -> &[f32] {
        let s = self.units * self.d;
        &self.x[i * s..(i + 1) * s]
    }

    fn check(&self) -> Result<()> {
        if self.units == 0 || self.d == 0 || self.x.len() != self.len() * self.units * self.d {
            return Err(Error::Config(format!(
                "{} values for {} maps of {} x {}",
                self.x.len(),
                self.len(),
                self.units,
                self.d
            )));
        }
        super::check_training_data(self.x, self.y, self.classes, "maps")
    }
}

/// How to train.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Training {
    /// Filters of the added layer.
    pub filters: usize,
    /// Passes over the training images.
    pub epochs: usize,
    /// SGD step size.
    pub learning_rate: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 penalty λ on the weights (not the biases).
    pub weight_decay: f64,
    /// Images per SGD step.
    pub batch: usize,
    /// Seed of the initial weights and the shuffles.
    pub seed: u64,
}

impl Default for Training {
    /// The paper's 100 filters, learning rate 0.01 and 50 epochs.
    fn default() -> Self {
        Training {
            filters: 100,
            epochs: 50,
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 16,
            seed: 1,
        }
    }
}

/// The added layer and its softmax head: parameters as one vector
/// `[W (filters x d), b (filters), V (classes x filters), c (classes)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AConvLayer {
    /// Filters.
    pub filters: usize,
    /// Input channels.
    pub d: usize,
    /// Classes of the head.
    pub classes: usize,
    /// The parameters.
    pub theta: Vec<f64>,
}

/// Computes the added layer's pre-activations `W f + b` of `rows` positions `x` (`[rows][d]`):
/// `[rows][filters]`. Training calls it for every minibatch; the rest (max-pooling, the head,
/// the gradient) runs on the host in f64.
pub trait PreActivations {
    /// The pre-activations of `layer` on `x`.
    fn pre_activations(&self, layer: &AConvLayer, x: &[f32], rows: usize) -> Result<Vec<f64>>;
}

/// On the host, as an f64 GEMM: exact enough for the gradient check.
pub struct HostF64;

impl PreActivations for HostF64 {
    fn pre_activations(&self, layer: &AConvLayer, x: &[f32], rows: usize) -> Result<Vec<f64>> {
        let (d, f) = (layer.d, layer.filters);
        if x.len() != rows * d {
            return Err(Error::shape(
                "aconv pre-activations",
                format!("{} values for {rows} positions of {d}", x.len()),
            ));
        }
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut pre: Vec<f64> = (0..rows)
            .flat_map(|_| layer.bias().iter().copied())
            .collect();
        // SAFETY: pre is rows x f (row-major), x64 rows x d, the weights f x d read as their
        // transpose d x f (row stride 1, column stride d); every index stays inside.
        unsafe {
            gemm::gemm(
                rows,
                f,
                d,
                pre.as_mut_ptr(),
                1,
                f as isize,
                true,
                x64.as_ptr(),
                1,
                d as isize,
                layer.weight().as_ptr(),
                d as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        Ok(pre)
    }
}

/// One image's forward pass: the pooled activations, where each filter's maximum lies (with
/// its pre-activation), and the class logits.
struct Forward {
    pooled: Vec<f64>,
    argmax: Vec<(usize, f64)>,
    logits: Vec<f64>,
}

impl AConvLayer {
    /// Initial parameters: `W` uniform in ±sqrt(6 / (d + filters)) (Glorot), biases and the
    /// head zero.
    pub fn init(filters: usize, d: usize, classes: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let limit = (6.0 / (d + filters) as f64).sqrt();
        let mut theta = vec![0.0; filters * d + filters + classes * filters + classes];
        for w in &mut theta[..filters * d] {
            *w = (2.0 * rng.uniform() - 1.0) * limit;
        }
        AConvLayer {
            filters,
            d,
            classes,
            theta,
        }
    }

    /// The convolution's weights `[filters][d]`.
    pub fn weight(&self) -> &[f64] {
        &self.theta[..self.filters * self.d]
    }

    /// The convolution's biases.
    pub fn bias(&self) -> &[f64] {
        let o = self.filters * self.d;
        &self.theta[o..o + self.filters]
    }

    /// The head's weights `[classes][filters]` and biases.
    pub fn head(&self) -> (&[f64], &[f64]) {
        let o = self.filters * (self.d + 1);
        let (v, c) = self.theta[o..].split_at(self.classes * self.filters);
        (v, c)
    }

    /// The layer as a 1x1 convolution, with or without its ReLU.
    pub fn to_conv(&self, relu: bool) -> Result<Conv2dWeights> {
        let spec = Conv2dSpec {
            in_c: self.d,
            out_c: self.filters,
            window: Window2d {
                kh: 1,
                kw: 1,
                stride_h: 1,
                stride_w: 1,
                pad_h: 0,
                pad_w: 0,
            },
            relu,
        };
        Conv2dWeights::new(
            spec,
            self.weight().iter().map(|&v| v as f32).collect(),
            self.bias().iter().map(|&v| v as f32).collect(),
        )
    }

    /// The layer's activations on one map `[units][d]`: `[units][filters]`.
    pub fn activations(&self, map: &[f32]) -> Result<Vec<f64>> {
        let mut a = HostF64.pre_activations(self, map, map.len() / self.d)?;
        a.iter_mut().for_each(|v| *v = v.max(0.0));
        Ok(a)
    }

    /// The forward pass of each of `maps`' `images`.
    fn forward_all(
        &self,
        maps: &Maps<'_>,
        images: &[usize],
        engine: &dyn PreActivations,
    ) -> Result<Vec<Forward>> {
        // Images per call: enough rows to keep the cores busy, few enough to bound the f64
        // copy (16 x 64 positions x 4096 values = 32 MiB).
        const CHUNK: usize = 16;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(CHUNK) {
            let x: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| maps.image(i).iter().copied())
                .collect();
            let pre = engine.pre_activations(self, &x, chunk.len() * maps.units)?;
            out.extend(
                pre.chunks(maps.units * self.filters)
                    .map(|p| self.head_forward(p)),
            );
        }
        Ok(out)
    }

    /// Max-pooling, ReLU and the head on one image's pre-activations `[units][filters]`.
    fn head_forward(&self, pre: &[f64]) -> Forward {
        let mut argmax = vec![(0usize, f64::NEG_INFINITY); self.filters];
        for (p, row) in pre.chunks(self.filters).enumerate() {
            for (best, &v) in argmax.iter_mut().zip(row) {
                if v > best.1 {
                    *best = (p, v);
                }
            }
        }
        let pooled: Vec<f64> = argmax.iter().map(|&(_, pre)| pre.max(0.0)).collect();
        let (v, c) = self.head();
        let logits = (0..self.classes)
            .map(|k| {
                v[k * self.filters..(k + 1) * self.filters]
                    .iter()
                    .zip(&pooled)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    + c[k]
            })
            .collect();
        Forward {
            pooled,
            argmax,
            logits,
        }
    }

    /// The predicted class of one map.
    pub fn predict(&self, map: &[f32]) -> Result<usize> {
        let pre = HostF64.pre_activations(self, map, map.len() / self.d)?;
        Ok(super::linear::argmax(&self.head_forward(&pre).logits))
    }

    /// The objective on `images` of `maps` and the share of them predicted right.
    pub fn evaluate(
        &self,
        maps: &Maps<'_>,
        images: &[usize],
        weight_decay: f64,
        engine: &dyn PreActivations,
    ) -> Result<(f64, f64)> {
        let mut loss = 0.0;
        let mut right = 0;
        for (fw, &i) in self.forward_all(maps, images, engine)?.iter().zip(images) {
            let m = fw.logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + fw.logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            loss += lse - fw.logits[maps.y[i]];
            right += usize::from(super::linear::argmax(&fw.logits) == maps.y[i]);
        }
        let (v, _) = self.head();
        let penalty: f64 = self.weight().iter().chain(v).map(|t| t * t).sum();
        let n = images.len() as f64;
        Ok((loss / n + 0.5 * weight_decay * penalty, right as f64 / n))
    }

    /// The objective on `images` of `maps` (mean cross-entropy plus the L2 penalty) and its
    /// gradient.
    pub fn objective(
        &self,
        maps: &Maps<'_>,
        images: &[usize],
        weight_decay: f64,
        engine: &dyn PreActivations,
    ) -> Result<(f64, Vec<f64>)> {
        let (f, nd) = (self.filters, self.filters * self.d);
        let passes: Vec<(Forward, Vec<f64>)> = self
            .forward_all(maps, images, engine)?
            .into_iter()
            .zip(images)
            .map(|(fw, &i)| {
                let m = fw.logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = fw.logits.iter().map(|z| (z - m).exp()).collect();
                let s: f64 = e.iter().sum();
                let dz: Vec<f64> = e
                    .iter()
                    .enumerate()
                    .map(|(k, v)| v / s - if k == maps.y[i] { 1.0 } else { 0.0 })
                    .collect();
                (fw, dz)
            })
            .collect();
        let scale = 1.0 / images.len() as f64;
        let mut grad = vec![0.0; self.theta.len()];
        let mut loss = 0.0;
        let (v, _) = self.head();
        for (&i, (fw, dz)) in images.iter().zip(&passes) {
            let y = maps.y[i];
            let m = fw.logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + fw.logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            loss += lse - fw.logits[y];
            let map = maps.image(i);
            for (k, &g) in dz.iter().enumerate() {
                let g = g * scale;
                let o = nd + f + k * f;
                for (gv, &a) in grad[o..o + f].iter_mut().zip(&fw.pooled) {
                    *gv += g * a;
                }
                grad[nd + f + self.classes * f + k] += g;
            }
            // Through the max and the ReLU: only each filter's maximum, where it is positive.
            for (j, &(p, pre)) in fw.argmax.iter().enumerate() {
                if pre <= 0.0 {
                    continue;
                }
                let dm: f64 = (0..self.classes).map(|k| v[k * f + j] * dz[k]).sum::<f64>() * scale;
                let fp = &map[p * self.d..(p + 1) * self.d];
                for (gw, &x) in grad[j * self.d..(j + 1) * self.d].iter_mut().zip(fp) {
                    *gw += dm * x as f64;
                }
                grad[nd + j] += dm;
            }
        }
        let mut penalty = 0.0;
        let head = nd + f..nd + f + self.classes * f;
        for r in [0..nd, head] {
            for (g, &t) in grad[r.clone()].iter_mut().zip(&self.theta[r]) {
                *g += weight_decay * t;
                penalty += t * t;
            }
        }
        Ok((loss * scale + 0.5 * weight_decay * penalty, grad))
    }
}

/// What one epoch of training reached.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    /// 1-based.
    pub epoch: usize,
    /// The objective over all training images after the epoch.
    pub objective: f64,
    /// Training accuracy after the epoch.
    pub accuracy: f64,
}

/// Trains the layer on `maps`, its pre-activations computed by `engine`; `progress` sees
/// each epoch.
pub fn train(
    maps: &Maps<'_>,
    t: &Training,
    engine: &dyn PreActivations,
    progress: &mut dyn FnMut(&Epoch),
) -> Result<AConvLayer> {
    maps.check()?;
    if t.filters == 0 || t.epochs == 0 || t.batch == 0 {
        return Err(Error::Config(
            "filters, epochs and batch must be at least 1".into(),
        ));
    }
    if !(t.learning_rate > 0.0 && (0.0..1.0).contains(&t.momentum) && t.weight_decay >= 0.0) {
        return Err(Error::Config(format!(
            "learning rate {} must be positive, momentum {} in [0, 1), weight decay {} at least 0",
            t.learning_rate, t.momentum, t.weight_decay
        )));
    }
    let mut layer = AConvLayer::init(t.filters, maps.d, maps.classes, t.seed);
    let mut velocity = vec![0.0; layer.theta.len()];
    let mut order: Vec<usize> = (0..maps.len()).collect();
    let all = order.clone();
    let mut rng = Rng(t.seed ^ 0x5EED);
    for epoch in 1..=t.epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(t.batch) {
            let (_, grad) = layer.objective(maps, batch, t.weight_decay, engine)?;
            for ((th, v), g) in layer.theta.iter_mut().zip(&mut velocity).zip(&grad) {
                *v = t.momentum * *v - t.learning_rate * g;
                *th += *v;
            }
        }
        let (objective, accuracy) = layer.evaluate(maps, &all, t.weight_decay, engine)?;
        if !objective.is_finite() {
            return Err(Error::Config(format!(
                "training diverged in epoch {epoch} (objective {objective}); try a smaller --learning-rate"
            )));
        }
        progress(&Epoch {
            epoch,
            objective,
            accuracy,
        });
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` maps of `units` x `d` values, two or three classes, each class brighter in its own
    /// channels at one random position.
    fn toy(n: usize, units: usize, d: usize, classes: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rng = Rng(3);
        let y: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let mut x = Vec::with_capacity(n * units * d);
        for &c in &y {
            let hot = (rng.next() % units as u64) as usize;
            for p in 0..units {
                for j in 0..d {
                    let base = rng.uniform() as f32;
                    let signal = if p == hot && j % classes == c {
                        2.0
                    } else {
                        0.0
                    };
                    x.push(base + signal);
                }
            }
        }
        (x, y)
    }

    #[test]
    fn the_gradient_matches_central_differences() {
        let (x, y) = toy(6, 5, 7, 3);
        let maps = Maps {
            x: &x,
            units: 5,
            d: 7,
            y: &y,
            classes: 3,
        };
        let mut layer = AConvLayer::init(4, 7, 3, 9);
        // A head and biases away from zero, so that every term of the gradient is exercised.
        let mut rng = Rng(5);
        let o = 4 * 7;
        for t in &mut layer.theta[o..] {
            *t = rng.uniform() - 0.3;
        }
        let images: Vec<usize> = (0..6).collect();
        let (_, grad) = layer.objective(&maps, &images, 0.01, &HostF64).unwrap();
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for (j, &g) in grad.iter().enumerate() {
            let mut plus = layer.clone();
            plus.theta[j] += h;
            let mut minus = layer.clone();
            minus.theta[j] -= h;
            let numeric = (plus.objective(&maps, &images, 0.01, &HostF64).unwrap().0
                - minus.objective(&maps, &images, 0.01, &HostF64).unwrap().0)
                / (2.0 * h);
            // Central differences err by O(h²) times the third derivative (~1e-12 here) plus
            // the f64 rounding of the objective, 2^-52 |f| / h ≈ 2e-10 for |f| ≈ 1 (measured
            // worst: 2.3e-10); the max and the ReLU are smooth here unless a step crosses a
            // tie, which a random problem makes unlikely. A wrong term errs by O(1).
            let err = (numeric - g).abs() / g.abs().max(1.0);
            worst = worst.max(err);
        }
        assert!(worst < 1e-8, "largest relative gradient error {worst:e}");
    }

    #[test]
    fn training_lowers_the_objective_and_learns_the_toy_classes() {
        let (x, y) = toy(48, 6, 12, 3);
        let maps = Maps {
            x: &x,
            units: 6,
            d: 12,
            y: &y,
            classes: 3,
        };
        let t = Training {
            filters: 8,
            epochs: 40,
            learning_rate: 0.05,
            ..Training::default()
        };
        let mut epochs = Vec::new();
        let layer = train(&maps, &t, &HostF64, &mut |e| epochs.push(e.clone())).unwrap();
        let init = AConvLayer::init(8, 12, 3, t.seed);
        let first = init
            .objective(
                &maps,
                &(0..48).collect::<Vec<_>>(),
                t.weight_decay,
                &HostF64,
            )
            .unwrap()
            .0;
        // A zero head gives every class 1/3; the penalty is on the initial W alone.
        let w2: f64 = init.weight().iter().map(|w| w * w).sum();
        let want = 3f64.ln() + 0.5 * t.weight_decay * w2;
        assert!((first - want).abs() < 1e-12, "{first} != {want}");
        let last = epochs.last().unwrap();
        let every: Vec<usize> = (0..48).collect();
        let (objective, accuracy) = layer
            .evaluate(&maps, &every, t.weight_decay, &HostF64)
            .unwrap();
        let direct = layer
            .objective(&maps, &every, t.weight_decay, &HostF64)
            .unwrap()
            .0;
        assert!((objective - direct).abs() < 1e-12);
        let right = every
            .iter()
            .filter(|&&i| layer.predict(maps.image(i)).unwrap() == y[i])
            .count();
        assert_eq!(accuracy, right as f64 / 48.0);
        assert!(
            last.objective < 0.25 * first,
            "{first} -> {}",
            last.objective
        );
        assert!(last.accuracy >= 0.95, "{last:?}");
        assert_eq!(layer.activations(maps.image(0)).unwrap().len(), 6 * 8);
        // The same seed trains the same layer.
        let again = train(&maps, &t, &HostF64, &mut |_| {}).unwrap();
        assert_eq!(again, layer);
    }

    #[test]
    fn bad_training_settings_are_refused() {
        let (x, y) = toy(4, 2, 3, 2);
        let maps = Maps {
            x: &x,
            units: 2,
            d: 3,
            y: &y,
            classes: 2,
        };
        for t in [
            Training {
                learning_rate: 0.0,
                ..Training::default()
            },
            Training {
                filters: 0,
                ..Training::default()
            },
        ] {
            assert!(train(&maps, &t, &HostF64, &mut |_| {}).is_err());
        }
        let one = [0usize; 4];
        let maps = Maps { y: &one, ..maps };
        let e = train(&maps, &Training::default(), &HostF64, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("at least two classes"), "{e}");
    }
}
