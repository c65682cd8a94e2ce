#!/usr/bin/env bash
# The GEMM candidates for the CPU backend (issue 20) against PyTorch on the same shapes and
# threads: ROUNDS alternating rounds of tools/gemm_candidates (Rust crates and OpenBLAS) and
# tools/torch_gemm_shapes.py, medians written to docs/cpu_gemm.{json,md}.
#   BENCH_PYTHON=/path/to/python-with-torch bash tools/gemm_candidates.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
python="${BENCH_PYTHON:?set BENCH_PYTHON to a Python with torch and torchvision}"
cargo build --release --quiet --manifest-path tools/gemm_candidates/Cargo.toml
raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
for r in $(seq "$rounds"); do
    tools/gemm_candidates/target/release/gemm-candidates >>"$raw"
    "$python" tools/torch_gemm_shapes.py --threads "$(nproc)" 2>/dev/null >>"$raw"
    echo "gemm_candidates: round $r of $rounds done" >&2
done
"$python" - "$raw" "$rounds" <<'PY'
import json, statistics, sys, datetime, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
shapes, trunk = {}, {}
for r in rows:
    if "layer" in r:
        s = shapes.setdefault(r["layer"], {"m": r["m"], "n": r["n"], "k": r["k"], "runs": []})
        s["runs"].append({k: v for k, v in r.items() if k not in ("layer", "m", "n", "k", "threads")})
    else:
        trunk.setdefault(r["vgg16_trunk_batch"], []).append(r)
med = lambda xs: statistics.median(xs)
for s in shapes.values():
    keys = {k for run in s["runs"] for k in run}
    s["median"] = {k: med([run[k] for run in s["runs"] if k in run]) for k in sorted(keys)}
out = {"date": datetime.date.today().isoformat(), "cpu": cpu, "threads": rows[0]["threads"],
       "rounds": int(sys.argv[2]), "shapes": shapes,
       "vgg16_trunk": {b: {"images_per_second": med([r["images_per_second"] for r in rs]),
                           "effective_gflops": med([r["effective_gflops"] for r in rs]),
                           "torch": rs[0]["torch"]} for b, rs in trunk.items()}}
json.dump(out, open("docs/cpu_gemm.json", "w"), indent=1)
t = out["vgg16_trunk"]
md = ["# GEMM candidates for the CPU backend", "",
      f"Written by `tools/gemm_candidates.sh` on {out['date']}: {cpu}, {out['threads']} threads, median of",
      f"{out['rounds']} alternating rounds (each the best of 5 runs). f32 GFLOP/s of the product each VGG16",
      "convolution at 224x224, batch 1, becomes after im2col (m output pixels x n output channels,",
      "depth k = 9 x input channels).", "",
      "| layer | m x n x k | `gemm` 0.19 | `matrixmultiply` 0.3 | OpenBLAS (Debian) | PyTorch `torch.mm` |",
      "|---|---|---|---|---|---|"]
for name, s in shapes.items():
    m = s["median"]
    md.append(f"| {name} | {s['m']} x {s['n']} x {s['k']} | {m['gemm']:.0f} | {m['matrixmultiply']:.0f} | {m['openblas']:.0f} | {m['torch_mm']:.0f} |")
md += ["", "PyTorch's whole VGG16 trunk (conv1_1 to conv5_3, 30.7 GFLOP an image) on the same threads, "
       f"torch {t[1]['torch']}:", "",
       "| batch | images/s | effective GFLOP/s |", "|---|---|---|"]
for b, v in t.items():
    md.append(f"| {b} | {v['images_per_second']:.2f} | {v['effective_gflops']:.0f} |")
open("docs/cpu_gemm.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
