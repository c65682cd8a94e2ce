//! Linear classifiers on feature vectors, as the paper evaluates its representations:
//! one-vs-rest linear SVMs with the squared hinge loss and L2 regularisation (LIBLINEAR's
//! dual coordinate descent, its solver 1, with the bias as a constant feature of value 1,
//! regularised like the weights), and multinomial logistic regression with L2 regularisation
//! of the weights and a free bias (minimised with L-BFGS, as scikit-learn's default solver).
//! Sums are accumulated in f64; features are read as the f32 they are stored in.

use super::rng::Rng;
use crate::cpu::matmul::{matmul, Strided};
use crate::error::{Error, Result};
use rayon::prelude::*;

crate::choice! {
    /// Which linear model.
    pub enum Kind {
        /// One-vs-rest linear SVMs: `min ½|w|² + C Σ max(0, 1 − y (w·x + b))²` per class, the bias
        /// regularised as a weight on a constant feature (as LIBLINEAR and scikit-learn's
        /// LinearSVC do).
        Svm = "svm",
        /// Multinomial logistic regression: `min ½|W|² + C Σ −log softmax(W x + b)_y`, the bias
        /// free.
        Logistic = "logistic",
    }
}

/// Training examples: `n` feature vectors of length `d`, row-major, with class indices.
pub struct Examples<'a> {
    /// `n * d` values.
    pub x: &'a [f32],
    /// Vector length.
    pub d: usize,
    /// Class of each vector, `0..classes`.
    pub y: &'a [usize],
    /// Number of classes.
    pub classes: usize,
}

impl Examples<'_> {
    /// Vectors.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// No vectors.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn check(&self) -> Result<()> {
        if self.d == 0 || self.x.len() != self.y.len() * self.d {
            return Err(Error::Config(format!(
                "{} values for {} vectors of length {}",
                self.x.len(),
                self.y.len(),
                self.d
            )));
        }
        super::check_training_data(self.x, self.y, self.classes, "vectors")
    }
}

/// A trained linear model: class scores `W x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// What was trained.
    pub kind: Kind,
    /// Its regularisation constant.
    pub c: f64,
    /// `[classes][d]`.
    pub weights: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// Vector length.
    pub d: usize,
}

impl LinearModel {
    /// Classes.
    pub fn classes(&self) -> usize {
        self.bias.len()
    }

    /// The class scores of vector `x`: decision values (SVM) or logits (logistic).
    pub fn scores(&self, x: &[f32]) -> Vec<f64> {
        self.weights
            .chunks(self.d)
            .zip(&self.bias)
            .map(|(w, &b)| dot(w, x) + b as f64)
            .collect()
    }

    /// The highest-scoring class of `x` (the lowest index among ties).
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.scores(x))
    }

    /// Class probabilities of `x` (logistic regression's softmax; for an SVM, the softmax of
    /// its decision values, which ranks like them but is not calibrated).
    pub fn probabilities(&self, x: &[f32]) -> Vec<f64> {
        softmax(&self.scores(x))
    }
}

/// When training stops.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// SVM: stop when the projected gradients of the dual span less than this (LIBLINEAR's
    /// stopping rule; it uses 0.1, loose, with shrinking). Logistic: stop when the largest
    /// gradient entry is below this times its size at the start, or when five steps in a row
    /// lower the objective by less than f64 can tell.
    pub eps: f64,
    /// Passes over the data (SVM) or L-BFGS iterations (logistic) at most.
    pub max_iter: usize,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            eps: 1e-6,
            max_iter: 10_000,
        }
    }
}

/// The inner products `x_i·x_j + 1` of all pairs of examples (the 1 is the bias feature's),
/// `n x n` in f64: what the SVM's dual works on. With fewer examples than values per example
/// (cross-layer features have 10^5 or more), coordinate descent on it costs `O(n)` per step
/// instead of `O(d)`, and cross-validation reuses it for every fold and C.
pub struct Gram {
    n: usize,
    values: Vec<f64>,
}

impl Gram {
    /// Largest number of examples for which the SVM uses a Gram matrix (512 MiB of f64).
    pub const MAX_EXAMPLES: usize = 8192;

    /// The Gram matrix of `ex`, from f32 GEMMs over blocks of 4096 values summed in f64.
    pub fn of(ex: &Examples<'_>) -> Self {
        const BLOCK: usize = 4096;
        let (n, d) = (ex.len(), ex.d);
        let mut values = vec![1.0f64; n * n];
        let mut part = vec![0.0f32; n * n];
        for c0 in (0..d).step_by(BLOCK) {
            let kb = BLOCK.min(d - c0);
            // part[n x n] = X[:, c0..c0+kb] X[:, c0..c0+kb]^T.
            matmul(
                &mut part,
                (n, n, kb),
                Strided {
                    data: &ex.x[c0..],
                    row: d,
                    col: 1,
                },
                Strided {
                    data: &ex.x[c0..],
                    row: 1,
                    col: d,
                },
            );
            values
                .iter_mut()
                .zip(&part)
                .for_each(|(v, &p)| *v += p as f64);
        }
        Gram { n, values }
    }

    /// The Gram matrix of the examples `rows` (indices into this one's).
    pub fn subset(&self, rows: &[usize]) -> Self {
        let values = rows
            .iter()
            .flat_map(|&i| rows.iter().map(move |&j| self.values[i * self.n + j]))
            .collect();
        Gram {
            n: rows.len(),
            values,
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.n..(i + 1) * self.n]
    }
}

/// Whether the SVM on `ex` is better solved through a Gram matrix.
pub fn gram_pays(ex: &Examples<'_>) -> bool {
    ex.len() <= Gram::MAX_EXAMPLES && ex.len() < ex.d
}

/// Trains `kind` with regularisation `c` on `ex`.
pub fn train(ex: &Examples<'_>, kind: Kind, c: f64, tol: Tolerance) -> Result<LinearModel> {
    let gram = (kind == Kind::Svm && gram_pays(ex)).then(|| Gram::of(ex));
    train_with(ex, gram.as_ref(), kind, c, tol)
}

/// [`train`], with the SVM's Gram matrix of `ex` when there is one.
pub fn train_with(
    ex: &Examples<'_>,
    gram: Option<&Gram>,
    kind: Kind,
    c: f64,
    tol: Tolerance,
) -> Result<LinearModel> {
    ex.check()?;
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::Config(format!("C must be positive, got {c}")));
    }
    if gram.is_some_and(|g| g.n != ex.len()) {
        return Err(Error::Config("Gram matrix of other examples".into()));
    }
    let (weights, bias) = match kind {
        Kind::Svm => {
            let per_class: Vec<(Vec<f64>, f64)> = (0..ex.classes)
                .into_par_iter()
                .map(|k| match gram {
                    Some(g) => svm_dual_cd_gram(ex, g, k, c, tol),
                    None => svm_dual_cd(ex, k, c, tol),
                })
                .collect();
            let mut w = Vec::with_capacity(ex.classes * ex.d);
            let mut b = Vec::with_capacity(ex.classes);
            for (wk, bk) in per_class {
                w.extend(wk.iter().map(|&v| v as f32));
                b.push(bk as f32);
            }
            (w, b)
        }
        Kind::Logistic => {
            let (w, b) = logistic_lbfgs(ex, c, tol)?;
            (
                w.iter().map(|&v| v as f32).collect(),
                b.iter().map(|&v| v as f32).collect(),
            )
        }
    };
    Ok(LinearModel {
        kind,
        c,
        weights,
        bias,
        d: ex.d,
    })
}

fn dot(w: &[f32], x: &[f32]) -> f64 {
    w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn dot64(w: &[f64], x: &[f32]) -> f64 {
    w.iter().zip(x).map(|(&a, &b)| a * b as f64).sum()
}

/// Index of the largest value (the first among ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in v.iter().enumerate() {
        if s > v[best] {
            best = i;
        }
    }
    best
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Class `k` against the rest by dual coordinate descent (Hsieh et al., ICML 2008; LIBLINEAR
/// solver 1): `min ½ αᵀ(Q + I/(2C))α − Σα, α ≥ 0`, `Q_ij = y_i y_j (x_i·x_j + 1)`, keeping
/// `w = Σ α_i y_i x_i` and `b = Σ α_i y_i` (the bias feature). Returns `(w, b)`.
fn svm_dual_cd(ex: &Examples<'_>, k: usize, c: f64, tol: Tolerance) -> (Vec<f64>, f64) {
    let diag = 0.5 / c;
    let qii = (0..ex.len())
        .map(|i| dot(ex.row(i), ex.row(i)) + 1.0 + diag)
        .collect();
    let w = vec![0.0f64; ex.d];
    let mut kept = Kept::Weights { ex, qii, w, b: 0.0 };
    dual_cd(&mut kept, &one_vs_rest(ex, k), k, diag, tol);
    match kept {
        Kept::Weights { w, b, .. } => (w, b),
        Kept::Decisions { .. } => unreachable!("made as weights above"),
    }
}

/// [`svm_dual_cd`] on a Gram matrix: keeps `f_i = Σ_j α_j y_j (x_i·x_j + 1)` instead of `w`,
/// `O(n)` per step, and forms `w` once at the end.
fn svm_dual_cd_gram(
    ex: &Examples<'_>,
    gram: &Gram,
    k: usize,
    c: f64,
    tol: Tolerance,
) -> (Vec<f64>, f64) {
    let diag = 0.5 / c;
    let f = vec![0.0f64; ex.len()];
    let y = one_vs_rest(ex, k);
    let alpha = dual_cd(&mut Kept::Decisions { gram, f, diag }, &y, k, diag, tol);
    let mut w = vec![0.0f64; ex.d];
    let mut b = 0.0;
    for (i, &a) in alpha.iter().enumerate() {
        if a != 0.0 {
            let s = a * y[i];
            w.iter_mut()
                .zip(ex.row(i))
                .for_each(|(wj, &xj)| *wj += s * xj as f64);
            b += s;
        }
    }
    (w, b)
}

/// The labels of class `k` against the rest: 1 or -1.
fn one_vs_rest(ex: &Examples<'_>, k: usize) -> Vec<f64> {
    ex.y.iter()
        .map(|&c| if c == k { 1.0 } else { -1.0 })
        .collect()
}

/// What dual coordinate descent keeps up to date as α changes.
enum Kept<'a> {
    /// `w` and `b` themselves, with each example's `Q_ii + 1/(2C)` ([`svm_dual_cd`]).
    Weights {
        ex: &'a Examples<'a>,
        qii: Vec<f64>,
        w: Vec<f64>,
        b: f64,
    },
    /// Every example's decision value `f` ([`svm_dual_cd_gram`]).
    Decisions {
        gram: &'a Gram,
        f: Vec<f64>,
        diag: f64,
    },
}

impl Kept<'_> {
    /// Example `i`'s decision value now.
    fn decision(&self, i: usize) -> f64 {
        match self {
            Kept::Weights { ex, w, b, .. } => dot64(w, ex.row(i)) + b,
            Kept::Decisions { f, .. } => f[i],
        }
    }

    /// `Q_ii + 1/(2C)`: the objective's curvature along `α_i`.
    fn curvature(&self, i: usize) -> f64 {
        match self {
            Kept::Weights { qii, .. } => qii[i],
            Kept::Decisions { gram, diag, .. } => gram.row(i)[i] + diag,
        }
    }

    /// Takes in a change of `α_i` by `step / y_i`.
    fn add(&mut self, i: usize, step: f64) {
        match self {
            Kept::Weights { ex, w, b, .. } => {
                w.iter_mut()
                    .zip(ex.row(i))
                    .for_each(|(wj, &xj)| *wj += step * xj as f64);
                *b += step;
            }
            Kept::Decisions { gram, f, .. } => f
                .iter_mut()
                .zip(gram.row(i))
                .for_each(|(fj, &kij)| *fj += step * kij),
        }
    }
}

/// Dual coordinate descent's passes for class `k` (which seeds the order), labels `y`: each
/// pass visits the examples in a fresh random order and moves `α_i` to its clipped optimum;
/// they stop once the projected gradients spread less than `tol.eps`. Returns α.
fn dual_cd(kept: &mut Kept<'_>, y: &[f64], k: usize, diag: f64, tol: Tolerance) -> Vec<f64> {
    let n = y.len();
    let mut alpha = vec![0.0f64; n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng(k as u64 + 1);
    for _ in 0..tol.max_iter {
        rng.shuffle(&mut order);
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        for &i in &order {
            let g = y[i] * kept.decision(i) - 1.0 + diag * alpha[i];
            let pg = if alpha[i] == 0.0 { g.min(0.0) } else { g };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg != 0.0 {
                let old = alpha[i];
                alpha[i] = (old - g / kept.curvature(i)).max(0.0);
                let step = (alpha[i] - old) * y[i];
                if step != 0.0 {
                    kept.add(i, step);
                }
            }
        }
        if pg_max - pg_min < tol.eps {
            break;
        }
    }
    alpha
}

/// The logistic objective and its gradient at `theta` = `[W (K x d), b (K)]`.
fn logistic_objective(ex: &Examples<'_>, c: f64, theta: &[f64]) -> (f64, Vec<f64>) {
    let (k, d) = (ex.classes, ex.d);
    let (w, b) = theta.split_at(k * d);
    // Per example: loss and the residual p - onehot, in parallel.
    let per: Vec<(f64, Vec<f64>)> = (0..ex.len())
        .into_par_iter()
        .map(|i| {
            let x = ex.row(i);
            let z: Vec<f64> = (0..k)
                .map(|j| dot64(&w[j * d..(j + 1) * d], x) + b[j])
                .collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let r: Vec<f64> = (0..k)
                .map(|j| (z[j] - lse).exp() - if j == ex.y[i] { 1.0 } else { 0.0 })
                .collect();
            (lse - z[ex.y[i]], r)
        })
        .collect();
    let loss: f64 = per.iter().map(|(l, _)| l).sum();
    let mut grad = vec![0.0f64; theta.len()];
    let (gw, gb) = grad.split_at_mut(k * d);
    gw.par_chunks_mut(d).enumerate().for_each(|(j, g)| {
        g.iter_mut().zip(&w[j * d..]).for_each(|(g, &wv)| *g = wv);
        for (i, (_, r)) in per.iter().enumerate() {
            let s = c * r[j];
            if s != 0.0 {
                g.iter_mut()
                    .zip(ex.row(i))
                    .for_each(|(g, &xv)| *g += s * xv as f64);
            }
        }
    });
    for (j, g) in gb.iter_mut().enumerate() {
        *g = c * per.iter().map(|(_, r)| r[j]).sum::<f64>();
    }
    let reg = 0.5 * w.iter().map(|v| v * v).sum::<f64>();
    (reg + c * loss, grad)
}

/// Minimises the logistic objective by L-BFGS (10 pairs, backtracking line search on the
/// Armijo condition). Returns `(W, b)`.
fn logistic_lbfgs(ex: &Examples<'_>, c: f64, tol: Tolerance) -> Result<(Vec<f64>, Vec<f64>)> {
    const PAIRS: usize = 10;
    let len = ex.classes * (ex.d + 1);
    let mut theta = vec![0.0f64; len];
    let (mut f, mut g) = logistic_objective(ex, c, &theta);
    let inf_norm = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let g0 = inf_norm(&g).max(f64::MIN_POSITIVE);
    let dotf = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    // Steps that no longer lower the objective beyond f64's resolution end the search.
    let mut stalled = 0;
    for _ in 0..tol.max_iter {
        if inf_norm(&g) <= tol.eps * g0 || stalled >= 5 {
            break;
        }
        // Two-loop recursion: direction = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dotf(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = dotf(s, y) / dotf(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let bta = rho * dotf(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - bta) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dotf(&dir, &g);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            history.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dotf(&dir, &g);
        }
        let mut step = if history.is_empty() {
            1.0 / inf_norm(&g).max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..60 {
            let next: Vec<f64> = theta.iter().zip(&dir).map(|(t, d)| t + step * d).collect();
            let (fn_, gn) = logistic_objective(ex, c, &next);
            if fn_ <= f + 1e-4 * step * slope {
                accepted = Some((next, fn_, gn));
                break;
            }
            step *= 0.5;
        }
        let Some((next, fn_, gn)) = accepted else {
            break; // no decrease possible at f64 precision: at the minimum
        };
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dotf(&s, &y);
        if sy > 1e-12 * dotf(&y, &y).sqrt() * dotf(&s, &s).sqrt() {
            if history.len() == PAIRS {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        stalled = if f - fn_ <= 1e-15 * f.abs().max(1.0) {
            stalled + 1
        } else {
            0
        };
        theta = next;
        f = fn_;
        g = gn;
    }
    if !f.is_finite() {
        return Err(Error::Config(
            "logistic regression diverged (non-finite loss)".into(),
        ));
    }
    let b = theta.split_off(ex.classes * ex.d);
    Ok((theta, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three separable-ish clusters in 4 dimensions.
    fn toy() -> (Vec<f32>, Vec<usize>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut rng = Rng(7);
        for i in 0..60 {
            let k = i % 3;
            for j in 0..4 {
                let noise = (rng.next() % 1000) as f32 / 1000.0 - 0.5;
                x.push(if j == k { 2.0 } else { 0.0 } + noise);
            }
            y.push(k);
        }
        (x, y)
    }

    /// `n` vectors of length `d` with `n < d`: the shape of cross-layer features, where the
    /// SVM goes through the Gram matrix.
    fn wide(n: usize, d: usize) -> (Vec<f32>, Vec<usize>) {
        let mut rng = Rng(11);
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let x = (0..n * d)
            .map(|i| {
                let noise = (rng.next() % 2000) as f32 / 1000.0 - 1.0;
                noise + if i % d == y[i / d] { 1.5 } else { 0.0 }
            })
            .collect();
        (x, y)
    }

    /// The norm of the SVM's primal gradient for each class, computed in f64 from the
    /// examples alone: `w − 2C Σ_active (1 − y f) y x` and the bias's part. It vanishes at
    /// the optimum whichever way the dual was solved.
    fn primal_gradients(ex: &Examples<'_>, m: &LinearModel) -> Vec<f64> {
        (0..ex.classes)
            .map(|k| {
                let w = &m.weights[k * ex.d..(k + 1) * ex.d];
                let mut g: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                let mut gb = m.bias[k] as f64;
                for i in 0..ex.len() {
                    let yi = if ex.y[i] == k { 1.0 } else { -1.0 };
                    let margin = 1.0 - yi * (dot(w, ex.row(i)) + m.bias[k] as f64);
                    if margin > 0.0 {
                        for (gj, &xj) in g.iter_mut().zip(ex.row(i)) {
                            *gj -= 2.0 * m.c * margin * yi * xj as f64;
                        }
                        gb -= 2.0 * m.c * margin * yi;
                    }
                }
                g.iter().map(|v| v * v).sum::<f64>().sqrt() + gb.abs()
            })
            .collect()
    }

    #[test]
    fn both_kinds_fit_the_training_set_and_satisfy_their_optimality_conditions() {
        let (x, y) = toy();
        let ex = Examples {
            x: &x,
            d: 4,
            y: &y,
            classes: 3,
        };
        assert!(!gram_pays(&ex));
        for kind in [Kind::Svm, Kind::Logistic] {
            let m = train(&ex, kind, 1.0, Tolerance::default()).unwrap();
            let correct = (0..60).filter(|&i| m.predict(ex.row(i)) == y[i]).count();
            assert!(correct >= 57, "{kind:?}: {correct}/60");
        }
        let m = train(&ex, Kind::Svm, 1.0, Tolerance::default()).unwrap();
        for (k, g) in primal_gradients(&ex, &m).into_iter().enumerate() {
            assert!(g < 1e-4, "class {k}: primal gradient {g:e}");
        }
    }

    #[test]
    fn the_gram_path_reaches_the_same_optimum_as_the_primal_path() {
        let tol = Tolerance {
            eps: 1e-9,
            max_iter: 100_000,
        };
        for (n, d, c) in [(20, 50, 1.0), (30, 4097, 0.01), (60, 4, 1.0)] {
            let (x, y) = if d == 4 { toy() } else { wide(n, d) };
            let ex = Examples {
                x: &x,
                d,
                y: &y,
                classes: 3,
            };
            assert_eq!(gram_pays(&ex), n < d);
            let gram = Gram::of(&ex);
            let via_gram = train_with(&ex, Some(&gram), Kind::Svm, c, tol).unwrap();
            let primal = train_with(&ex, None, Kind::Svm, c, tol).unwrap();
            for m in [&via_gram, &primal] {
                for (k, g) in primal_gradients(&ex, m).into_iter().enumerate() {
                    assert!(g < 1e-4, "n {n} d {d} class {k}: primal gradient {g:e}");
                }
            }
            // The optimum is unique (the dual is strictly convex), so the two agree up to
            // rounding: the f32 weights and Gram entries (measured: 1.3e-7 of the largest
            // weight). A wrong step or a missing term moves weights by their own size.
            let scale = primal.weights.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = via_gram
                .weights
                .iter()
                .zip(&primal.weights)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "n {n} d {d}: {diff:e} of {scale:e}");
        }
    }

    #[test]
    fn bad_examples_are_refused() {
        let x = vec![1.0f32; 8];
        let one_class = Examples {
            x: &x,
            d: 2,
            y: &[0, 0, 0, 0],
            classes: 2,
        };
        let e = train(&one_class, Kind::Svm, 1.0, Tolerance::default()).unwrap_err();
        assert!(e.to_string().contains("at least two classes"), "{e}");
        let ok = Examples {
            x: &x,
            d: 2,
            y: &[0, 1, 0, 1],
            classes: 2,
        };
        assert!(train(&ok, Kind::Logistic, 0.0, Tolerance::default()).is_err());
    }
}
