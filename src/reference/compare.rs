//! A kernel's output against the reference under derived error bounds. The tests and
//! `crosspool selftest` hold every kernel to these same functions, so a bound is stated once.

use super::{f32_dot_error_bound, Reduced};

/// How a kernel's output compares with the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// The worst `|error| / bound` over the outputs (0 for an exact comparison that matched).
    pub worst: f64,
    /// The output where it was reached.
    pub at: usize,
    /// The first output outside its bound (or what else makes the comparison fail), in
    /// words; `None` when every output is inside.
    pub failure: Option<String>,
}

impl Agreement {
    /// Whether every output is within its bound.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// No output compared yet (or every one exact).
    fn clean() -> Self {
        Agreement {
            worst: 0.0,
            at: 0,
            failure: None,
        }
    }

    /// Notes output `i`, off by `err` where `tol` is allowed: its share of the bound, and if
    /// `ok` is false the failure `why` (the first one is kept). A failing output counts as its
    /// share where that passes the bound, else (a wrong sign, NaN) as infinitely far.
    fn note(&mut self, i: usize, err: f64, tol: f64, ok: bool, why: impl FnOnce() -> String) {
        let share = if tol > 0.0 { err / tol } else { 0.0 };
        let share = match ok {
            true => share,
            false if share.is_finite() && share > 1.0 => share,
            false => f64::INFINITY,
        };
        if !ok {
            self.failure.get_or_insert_with(why);
        }
        if share > self.worst {
            self.worst = share;
            self.at = i;
        }
    }

    /// A failure when `got` and `want` differ in length.
    fn lengths(got: usize, want: usize, what: &str) -> Option<Self> {
        (got != want).then(|| Self::failed(format!("{got} {what} where the reference has {want}")))
    }

    fn failed(why: String) -> Self {
        Agreement {
            worst: f64::INFINITY,
            at: 0,
            failure: Some(why),
        }
    }

    /// Fails when every value of `got` is zero: such an output proves nothing.
    fn require_nonzero(mut self, got: &[f32]) -> Self {
        if self.failure.is_none() && got.iter().all(|&v| v == 0.0) {
            self.failure = Some("the output is all zeros, so the comparison proves nothing".into());
        }
        self
    }
}

/// `err <= tol`, false for NaN: an error that is not a number is outside every bound.
fn inside(err: f64, tol: f64) -> bool {
    err <= tol
}

/// What a kernel rounded its outputs to after summing in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// f32 outputs: the sum's own rounding is all.
    F32,
    /// f16 outputs: WGSL lets a conversion to f16 take either neighbour, so one f16 ulp
    /// (`2^-10 |y|`) more, and a value under f16's smallest normal (`2^-14`) may be flushed.
    F16,
}

/// How the kernel's f32 sums round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulation {
    /// Round to nearest (scalar shader arithmetic, fused or not): unit roundoff `2^-24`.
    Nearest,
    /// Sums that may truncate rather than round, as tensor cores' f32 accumulation does
    /// (Fasi, Higham, Mikaitis, Pranesh, "Numerical behavior of NVIDIA tensor cores", 2021):
    /// unit roundoff `2^-23`, so twice the bound of [`Accumulation::Nearest`].
    Truncating,
}

/// `got` against the reference reduction `want` of `terms` products per output: each output
/// within `gamma_terms * magnitude` (the f32 summation bound, [`f32_dot_error_bound`]) plus
/// half an f32 ulp for the reference's own rounding, and what `rounding` adds.
pub fn within_sum_bound(
    got: &[f32],
    want: &Reduced,
    terms: usize,
    rounding: Rounding,
    accumulation: Accumulation,
) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), want.values.len(), "outputs")
        .or_else(|| Agreement::lengths(want.magnitude.len(), want.values.len(), "magnitudes"))
    {
        return f;
    }
    let gamma = match accumulation {
        Accumulation::Nearest => f32_dot_error_bound(terms) as f64,
        Accumulation::Truncating => 2.0 * f32_dot_error_bound(terms) as f64,
    };
    let mut a = Agreement::clean();
    for (i, (&g, (&r, &m))) in got
        .iter()
        .zip(want.values.iter().zip(&want.magnitude))
        .enumerate()
    {
        let (r, m) = (r as f64, m as f64);
        let sum_tol = gamma * m + r.abs() * f32::EPSILON as f64;
        let tol = match rounding {
            Rounding::F32 => sum_tol,
            Rounding::F16 => sum_tol + (r.abs() + sum_tol) * 2f64.powi(-10) + 2f64.powi(-14),
        };
        let err = (g as f64 - r).abs();
        // NaN compares false: it fails as an error beyond any bound.
        a.note(i, err, tol, inside(err, tol), || {
            format!("output {i}: {g} where the reference is {r} (|error| {err:.3e} > bound {tol:.3e}, magnitude {m:.3e})")
        });
    }
    a.require_nonzero(got)
}

/// Signed square roots of sums (`got`, FC-Conv's local features) against the reference sums
/// `sums` of at most `terms` terms each, compared through the square `g |g|` so that sums near
/// zero, where the square root is not Lipschitz, do not magnify rounding: the f32 sum is
/// within `gamma_terms * magnitude` of the exact one, and WGSL's sqrt is accurate to that of
/// `1 / inverseSqrt` (2 + 2.5 ulp), which squaring doubles, plus half an ulp for the square
/// itself: within 10 ulp of the sum. The sign must be the sum's.
pub fn roots_within_sum_bound(got: &[f32], sums: &Reduced, terms: usize) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), sums.values.len(), "outputs") {
        return f;
    }
    let gamma = f32_dot_error_bound(terms) as f64;
    let mut a = Agreement::clean();
    for (i, (&g, (&v, &m))) in got
        .iter()
        .zip(sums.values.iter().zip(&sums.magnitude))
        .enumerate()
    {
        let squared = g as f64 * (g as f64).abs();
        let err = (squared - v as f64).abs();
        let tol = gamma * m as f64 + 10.0 * f32::EPSILON as f64 * (v as f64).abs();
        let sign_ok = g.signum() == v.signum() || v == 0.0 || g == 0.0;
        a.note(i, err, tol, sign_ok && inside(err, tol), || {
            format!("output {i}: {g}, squared {squared:e}, where the reference sum is {v} (bound {tol:.3e})")
        });
    }
    a.require_nonzero(got)
}

/// `got` equal to `want` bit for bit, except that where `flush` allows, a subnormal reference
/// value may come back as zero of either sign (WGSL lets a GPU flush subnormals; NVIDIA's do).
pub fn bit_exact(got: &[f32], want: &[f32], flush: bool) -> Agreement {
    exact(got, want, " (bit-exact expected)", |g, w| {
        g.to_bits() == w.to_bits() || (flush && w.is_subnormal() && (g == 0.0 || g.is_subnormal()))
    })
}

/// `got` equal to `want` as values (so `-0 == +0`, which a maximum of zeros may return
/// either way), save that a subnormal reference value may come back flushed to zero.
pub fn values_equal(got: &[f32], want: &[f32]) -> Agreement {
    exact(got, want, "", |g, w| {
        g == w || (w.is_subnormal() && (g - w).abs() < f32::MIN_POSITIVE)
    })
}

/// The first output where `same` says `got` and `want` differ, in words (with `note`).
fn exact(got: &[f32], want: &[f32], note: &str, same: impl Fn(f32, f32) -> bool) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), want.len(), "outputs") {
        return f;
    }
    match got.iter().zip(want).position(|(&g, &w)| !same(g, w)) {
        None => Agreement::clean().require_nonzero(got),
        Some(i) => Agreement {
            worst: f64::INFINITY,
            at: i,
            failure: Some(format!(
                "output {i}: {} where the reference is {}{note}",
                got[i], want[i]
            )),
        },
    }
}

/// Integer words (codes, packed signs) equal to the reference's.
pub fn words_equal(got: &[u32], want: &[u32]) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), want.len(), "words") {
        return f;
    }
    match got.iter().zip(want).position(|(g, w)| g != w) {
        None if got.iter().all(|&w| w == 0) => {
            Agreement::failed("every word is zero, so the comparison proves nothing".into())
        }
        None => Agreement::clean(),
        Some(i) => Agreement {
            worst: f64::INFINITY,
            at: i,
            failure: Some(format!(
                "word {i}: {:#010x} where the reference has {:#010x}",
                got[i], want[i]
            )),
        },
    }
}

/// Each output within `rel * |reference|` of it, and finite: for values that are products
/// and quotients of a few rounded sums (normalisation), whose relative error is bounded.
pub fn within_relative(got: &[f32], want: &[f32], rel: f64) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), want.len(), "outputs") {
        return f;
    }
    let mut a = Agreement::clean();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (err, tol) = ((g as f64 - w as f64).abs(), rel * (w as f64).abs());
        a.note(i, err, tol, g.is_finite() && inside(err, tol), || {
            format!("output {i}: {g} where the reference is {w} (relative bound {rel:.3e})")
        });
    }
    a.require_nonzero(got)
}

/// `‖a − b‖₂ / ‖b‖₂`, accumulated in f64.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The normwise relative error of `got` against `want` within `tol`: for whole pipelines
/// (the forward pass and pooling), whose elementwise error has no useful bound.
pub fn within_rel_l2(got: &[f32], want: &[f32], tol: f64) -> Agreement {
    if let Some(f) = Agreement::lengths(got.len(), want.len(), "outputs") {
        return f;
    }
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Agreement::failed(format!("output {i} is {}", got[i]));
    }
    let e = rel_l2(got, want);
    Agreement {
        worst: e / tol,
        at: 0,
        failure: (!inside(e, tol)).then(|| format!("relative L2 error {e:.3e} > {tol:.1e}")),
    }
    .require_nonzero(want)
}

/// The cosine similarity of `a` and `b`, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Every one of the `images` equal parts of `got` at a cosine of at least `min` to the same
/// part of `want`; the worst share is `(1 - cos) / (1 - min)`.
pub fn cosine_per_image(got: &[f32], want: &[f32], images: usize, min: f64) -> Agreement {
    if got.len() != want.len() || images == 0 || !got.len().is_multiple_of(images) {
        return Agreement::failed(format!(
            "{} outputs where the reference has {} ({images} images)",
            got.len(),
            want.len()
        ));
    }
    let per = got.len() / images;
    let mut a = Agreement::clean();
    for i in 0..images {
        let r = i * per..(i + 1) * per;
        let c = cosine(&got[r.clone()], &want[r]);
        // The error is 1 - cos, the bound 1 - min.
        a.note(i, 1.0 - c, 1.0 - min, inside(min, c), || {
            format!("image {i}: cosine {c:.7} < {min}")
        });
    }
    a.require_nonzero(want)
}

/// `v` as a GPU reads it after an f16 upload: rounded to nearest, subnormals flushed to zero
/// (a GPU may flush them, so a reference given these values is right either way).
pub fn as_read_from_f16(v: f32) -> f32 {
    let h = half::f16::from_f32(v).to_f32();
    if h.abs() < f32::from(half::f16::MIN_POSITIVE) {
        0.0
    } else {
        h
    }
}

/// Deterministic values in [-1, 1) (SplitMix64) for test and self-test inputs, so that a
/// failure reproduces.
pub fn seeded_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduced(values: &[f32], magnitude: &[f32]) -> Reduced {
        Reduced {
            values: values.to_vec(),
            magnitude: magnitude.to_vec(),
        }
    }

    #[test]
    fn sum_bound_passes_inside_and_names_the_first_output_outside() {
        let n = 100;
        let gamma = f32_dot_error_bound(n);
        let want = reduced(&[3.0, -0.25, 0.125], &[10.0, 1.0, 0.5]);
        let near: Vec<f32> = want
            .values
            .iter()
            .zip(&want.magnitude)
            .map(|(v, m)| v + 0.9 * gamma * m)
            .collect();
        let a = within_sum_bound(&near, &want, n, Rounding::F32, Accumulation::Nearest);
        assert!(a.passed() && a.worst < 1.0 && a.worst > 0.5, "{a:?}");
        let mut far = want.values.clone();
        far[1] += 3.0 * gamma * want.magnitude[1];
        let a = within_sum_bound(&far, &want, n, Rounding::F32, Accumulation::Nearest);
        assert!(
            a.failure.as_deref().unwrap().starts_with("output 1:"),
            "{a:?}"
        );
        // Truncating sums get twice the room: 1.5 times the bound passes there only.
        let mut mid = want.values.clone();
        mid[0] += 1.5 * gamma * want.magnitude[0];
        assert!(!within_sum_bound(&mid, &want, n, Rounding::F32, Accumulation::Nearest).passed());
        assert!(within_sum_bound(&mid, &want, n, Rounding::F32, Accumulation::Truncating).passed());
        // An f16 output may be one f16 ulp off.
        let mut ulp = want.values.clone();
        ulp[0] += 3.0 * 2f32.powi(-10) * 0.9;
        assert!(within_sum_bound(&ulp, &want, n, Rounding::F16, Accumulation::Nearest).passed());
        assert!(!within_sum_bound(&ulp, &want, n, Rounding::F32, Accumulation::Nearest).passed());
        // NaN, zeros and lengths.
        let mut nan = want.values.clone();
        nan[2] = f32::NAN;
        assert!(!within_sum_bound(&nan, &want, n, Rounding::F32, Accumulation::Nearest).passed());
        let zeros = reduced(&[0.0; 3], &[1.0; 3]);
        assert!(
            !within_sum_bound(&[0.0; 3], &zeros, n, Rounding::F32, Accumulation::Nearest).passed()
        );
        assert!(
            !within_sum_bound(&near[..2], &want, n, Rounding::F32, Accumulation::Nearest).passed()
        );
    }

    #[test]
    fn exact_comparisons() {
        let w = [1.0f32, -2.0, 1e-40, 0.0];
        assert!(bit_exact(&w, &w, false).passed());
        // A flushed subnormal passes only where flushing is allowed.
        let flushed = [1.0f32, -2.0, 0.0, 0.0];
        assert!(!bit_exact(&flushed, &w, false).passed());
        assert!(bit_exact(&flushed, &w, true).passed());
        // -0.0 is not +0.0 bit for bit, flushing or not.
        assert!(!bit_exact(&[1.0, -2.0, 1e-40, -0.0], &w, true).passed());
        assert!(!bit_exact(&[0.0; 4], &[0.0; 4], false).passed());
        // As values, zeros of either sign are equal and NaN equals nothing.
        assert!(values_equal(&[1.0, -0.0, 0.0], &[1.0, 0.0, 1e-40]).passed());
        assert!(!values_equal(&[1.0, f32::NAN], &[1.0, f32::NAN]).passed());
        assert!(!values_equal(&[1.0, 2.0], &[1.0, 2.5]).passed());
        assert!(words_equal(&[1, 2], &[1, 2]).passed());
        assert_eq!(
            words_equal(&[1, 3], &[1, 2]).failure.unwrap(),
            "word 1: 0x00000003 where the reference has 0x00000002"
        );
    }

    #[test]
    fn relative_normwise_and_cosine() {
        assert!(within_relative(&[1.0, 2.0], &[1.0, 2.0 + 1e-7], 1e-6).passed());
        assert!(!within_relative(&[1.0, 2.1], &[1.0, 2.0], 1e-6).passed());
        assert!(!within_relative(&[f32::INFINITY, 2.0], &[1.0, 2.0], 1.0).passed());
        let a = within_rel_l2(&[1.0, 1.0], &[1.0, 1.0 + 1e-6], 1e-5);
        assert!(a.passed() && a.worst < 0.1, "{a:?}");
        assert!(!within_rel_l2(&[1.0, 2.0], &[1.0, 1.0], 1e-5).passed());
        let b = [1.0f32, 0.0, 0.0, 1.0];
        assert!(cosine_per_image(&b, &b, 2, 0.9999).passed());
        let c = [1.0f32, 0.0, 1.0, 1.0];
        let a = cosine_per_image(&c, &b, 2, 0.9999);
        assert!(a.failure.unwrap().starts_with("image 1:"));
    }

    #[test]
    fn seeded_values_repeat_and_spread() {
        let v = seeded_values(1000, 7);
        assert_eq!(v, seeded_values(1000, 7));
        assert_ne!(v, seeded_values(1000, 8));
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(v.iter().any(|&x| x < -0.9) && v.iter().any(|&x| x > 0.9));
    }
}
