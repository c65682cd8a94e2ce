//! `crosspool selftest`: every GPU kernel this device would run, held to the CPU reference on
//! the user's own adapter under the bounds the tests use ([`crate::reference::compare`]).
//!
//! Drivers have bugs (wgpu issue 8805 is one for cooperative matrices), and a kernel that is
//! right on lavapipe and on one vendor's GPU may be wrong on another's. The checks here are
//! those of the test suite, on the same edge shapes (3, 17 and 513 channels, strides, odd
//! sizes): every convolution tile in f32 and in each f16 storage pair, max pooling, ReLU,
//! cross-layer pooling, normalisation, PCA projection, quantisation, scoring, and whole VGG16
//! forward passes with seeded weights against the CPU backend.

mod conv;
mod kernels;
mod network;

use crate::gpu::GpuContext;
use crate::reference::compare::Agreement;
use crate::Result;
use serde::Serialize;

/// What to check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Fewer shapes and storage pairs, and the whole network at 64 x 64: under a minute on a
    /// discrete GPU, a few on software Vulkan.
    pub quick: bool,
}

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every output within its bound.
    Pass,
    /// An output outside its bound, or the kernel failed to run.
    Fail,
    /// The adapter lacks what the kernel needs (shader-f16, cooperative matrices): the
    /// device never runs it, so nothing is wrong.
    Unavailable,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The kernel (and tile).
    pub kernel: String,
    /// The shape it ran on.
    pub shape: String,
    /// Storage: `f32`, or for f16 weights `f16 (IN->OUT)` with the input and output types.
    pub precision: String,
    /// How it ended.
    pub status: Status,
    /// The worst `|error| / bound` over the outputs (0 for an exact match).
    pub worst: Option<f64>,
    /// Why it failed or is unavailable; empty for a pass.
    pub detail: String,
    /// Milliseconds the check took, the reference included.
    pub ms: f64,
}

impl Row {
    /// A row for a check of `kernel` on `shape` in `precision` that started at `t0`.
    fn of(
        (kernel, shape, precision): (&str, &str, &str),
        t0: std::time::Instant,
        outcome: Result<Agreement>,
    ) -> Row {
        let (status, worst, detail) = match outcome {
            Ok(a) => match a.failure {
                None => (Status::Pass, Some(a.worst), String::new()),
                Some(why) => (Status::Fail, Some(a.worst), why),
            },
            Err(e) => (Status::Fail, None, e.to_string()),
        };
        Row {
            kernel: kernel.into(),
            shape: shape.into(),
            precision: precision.into(),
            status,
            worst,
            detail,
            ms: t0.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// A row for a check the adapter cannot run, with the reason.
    fn unavailable(kernel: &str, precision: &str, why: &str) -> Row {
        Row {
            kernel: kernel.into(),
            shape: "-".into(),
            precision: precision.into(),
            status: Status::Unavailable,
            worst: None,
            detail: why.into(),
            ms: 0.0,
        }
    }
}

/// Where checks send their rows as they finish.
type Emit<'a> = dyn FnMut(Row) + 'a;

/// A group of checks: its name (for a row if it panics) and what runs it.
type Group = (&'static str, fn(&GpuContext, Options, &mut Emit));

/// Runs every check on `ctx`, calling `each` with each row as it finishes (for progress), and
/// returns them all. A check that fails to run (a shader the driver rejects, a panic inside
/// wgpu) is a failed row; the other checks still run.
pub fn run(ctx: &GpuContext, opts: Options, mut each: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    let groups: [Group; 4] = [
        ("convolution", conv::check),
        ("pooling and activation", kernels::check_maps),
        ("features and retrieval", kernels::check_features),
        ("whole network", network::check),
    ];
    for (name, group) in groups {
        let mut emit = |r: Row| {
            each(&r);
            rows.push(r);
        };
        let t0 = std::time::Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group(ctx, opts, &mut emit)));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            emit(Row {
                kernel: name.into(),
                shape: "-".into(),
                precision: "-".into(),
                status: Status::Fail,
                worst: None,
                detail: format!("stopped by a panic: {why}"),
                ms: t0.elapsed().as_secs_f64() * 1e3,
            });
        }
    }
    rows
}

/// The table's header line.
pub fn header() -> String {
    format!(
        "{:<18} {:<36} {:<14} {:>9}  result",
        "kernel", "shape", "precision", "err/bound"
    )
}

/// One row of the table: the worst error as a share of its bound (`exact` for a bit-exact
/// match), then `ok`, `FAIL: why` or `n/a: why`.
pub fn format_row(r: &Row) -> String {
    let worst = match (r.status, r.worst) {
        (Status::Unavailable, _) | (_, None) => "-".to_string(),
        (_, Some(0.0)) => "exact".to_string(),
        (_, Some(w)) if w.is_finite() => format!("{w:.3}"),
        (_, Some(_)) => "inf".to_string(),
    };
    let result = match r.status {
        Status::Pass => "ok".to_string(),
        Status::Fail => format!("FAIL: {}", r.detail),
        Status::Unavailable => format!("n/a: {}", r.detail),
    };
    format!(
        "{:<18} {:<36} {:<14} {:>9}  {result}",
        r.kernel, r.shape, r.precision, worst
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(worst: f64, at: usize, failure: Option<&str>) -> crate::Result<Agreement> {
        Ok(Agreement {
            worst,
            at,
            failure: failure.map(String::from),
        })
    }

    #[test]
    fn rows_read_as_a_table() {
        let t0 = std::time::Instant::now();
        let pass = Row::of(
            ("conv small", "2x13x11x3 3x3 -> 64", "f32"),
            t0,
            agreed(0.4567, 3, None),
        );
        assert_eq!(pass.status, Status::Pass);
        assert!(
            format_row(&pass).contains("0.457  ok"),
            "{}",
            format_row(&pass)
        );
        let exact = Row::of(("max pool", "s", "f32"), t0, agreed(0.0, 0, None));
        assert!(format_row(&exact).contains("exact  ok"));
        let fail = Row::of(
            ("relu", "s", "f32"),
            t0,
            agreed(
                f64::INFINITY,
                1,
                Some("output 1: 2 where the reference is 0"),
            ),
        );
        assert_eq!(fail.status, Status::Fail);
        assert!(format_row(&fail).ends_with("inf  FAIL: output 1: 2 where the reference is 0"));
        let error = Row::of(
            ("conv coop", "s", "f16"),
            t0,
            Err(crate::Error::Config("no such feature".into())),
        );
        assert_eq!((error.status, error.worst), (Status::Fail, None));
        let na = Row::unavailable("conv coop", "f16", "no cooperative matrices");
        assert!(format_row(&na).ends_with("-  n/a: no cooperative matrices"));
        // The header's columns line up with the rows'.
        assert_eq!(header().find("result"), format_row(&na).find("n/a"));
    }
}
