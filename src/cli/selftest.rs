//! `crosspool selftest`: the GPU kernels held to the CPU reference on this adapter.

use crosspool::gpu::{shaders, ConvTile, GpuContext, GpuOptions};
use crosspool::selftest::{self, Options, Status};

/// Arguments of `selftest`.
#[derive(clap::Args)]
pub struct Args {
    /// Fewer shapes and storage pairs, and the whole network at 64 x 64 instead of 224:
    /// under a minute on a discrete GPU.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON on standard output (the table goes to standard error as
    /// the checks finish).
    #[arg(long)]
    json: bool,
}

/// Runs `selftest`; `Ok(false)` if any check failed.
pub fn run(opts: &GpuOptions, a: Args) -> anyhow::Result<bool> {
    // A misspelt tile would fail every row that builds a convolution and read as a driver
    // fault; it is the user's setting, so it is refused before anything runs.
    ConvTile::from_env()?;
    let ctx = GpuContext::new(opts).map_err(|e| {
        anyhow::Error::new(e).context(
            "selftest checks the kernels on a GPU adapter (software ones count), and none opens",
        )
    })?;
    let say = |line: &str| {
        if a.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&format!("device:  {}", ctx.describe()));
    say(&format!(
        "shaders: {}",
        match shaders::override_dir() {
            Some(d) => format!("from {} ({})", d.display(), shaders::SHADER_DIR_VAR),
            None => "built in".into(),
        }
    ));
    say(&format!(
        "checks:  {} (each row: the worst error as a share of its bound, which must not pass 1)",
        if a.quick { "quick" } else { "all" }
    ));
    say("");
    say(&selftest::header());
    let t0 = std::time::Instant::now();
    let rows = selftest::run(&ctx, Options { quick: a.quick }, |r| {
        say(&selftest::format_row(r))
    });
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let (passed, failed, unavailable) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Unavailable),
    );
    say("");
    say(&format!(
        "{passed} passed, {failed} failed, {unavailable} not available on this adapter ({:.1} s)",
        t0.elapsed().as_secs_f64()
    ));
    if a.json {
        let report = serde_json::json!({
            "device": ctx.describe(),
            "quick": a.quick,
            "passed": passed,
            "failed": failed,
            "unavailable": unavailable,
            "rows": rows,
        });
        println!("{report}");
    }
    if failed > 0 {
        eprintln!(
            "selftest: {failed} check(s) failed on {}: results on this adapter may be wrong. \
             Try `--precision f32`, CROSSPOOL_NO_COOPERATIVE_MATRIX=1 or another driver, and \
             report the table with `crosspool info`",
            ctx.info.name
        );
    }
    Ok(failed == 0)
}
