#!/usr/bin/env python3
"""Runs `crosspool bench` and tools/bench_torch.py on the same device, sizes and batches, and
writes docs/bench_TAG.md (a table), docs/bench_TAG.json and docs/bench_TAG.png (a plot). Needs
torch, torchvision and matplotlib; the crosspool binary must be built (cargo build --release).

    python3 tools/bench_compare.py --tag h100 --sizes 224 448 --batches 1 8 32
    python3 tools/bench_compare.py --tag lavapipe --batches 1 4 --iters 3 --warmup 1
    python3 tools/bench_compare.py --device cpu --tag cpu --batches 1 8 --rounds 3 --compile

With --device cpu, crosspool runs on its CPU backend and PyTorch on the CPU, both on --threads
threads (default: all cores); crosspool's other convolution kernels are timed too: direct
AVX-512 (CROSSPOOL_CPU_CONV=direct-avx512) and the portable one (gemm, the backend before its AVX-512
kernels), as "before".
--simd avx2 restricts both to AVX2 on an AVX-512 machine, to stand in for an AVX2-only CPU:
crosspool's kernels through CROSSPOOL_CPU_CONV=winograd-avx2 / direct-avx2, PyTorch's oneDNN
through ONEDNN_MAX_CPU_ISA=AVX2.
--bf16 (CPU) also times crosspool --precision bf16 (AMX) and PyTorch under bf16 autocast.
--rounds R times every implementation R times, alternating, and keeps the median of the R
results (each itself the median of --iters batches): shared machines drift by several percent.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys


def crosspool_row(args, size, batch, label, extra, env):
    common = ["--model", args.model, "--size", str(size), "--batch", str(batch), "--iters",
              str(args.iters), "--warmup", str(args.warmup), "--device", args.device, "--json"]
    done = subprocess.run([args.crosspool, "bench", *extra, *common], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"crosspool bench failed ({label}, size {size}, batch {batch}):\n{done.stderr}")
    r = json.loads(done.stdout)
    # Per stage: milliseconds, TFLOP/s and, on a GPU, the tile each convolution ran.
    stages = [{"stage": s["stage"], "ms": s["ms"], "tflops": s["gflops"] / 1e3, "tile": s.get("tile")}
              for s in r.get("stages_ms", [])]
    rows = [{"impl": label, "size": size, "batch": batch, "images_per_second": r["images_per_second"],
             "gflops": r["gflops"], "device": r["device"], "precision_path": r.get("precision_path"),
             "ms": r.get("ms"), "stages": stages}]
    # The overlapped pass: batches in flight, as `crosspool extract` runs them on a GPU.
    if "overlapped" in r:
        rows.append({"impl": f"{label}, {r['overlapped']['in_flight']} batches in flight",
                     "size": size, "batch": batch,
                     "images_per_second": r["overlapped"]["images_per_second"],
                     "device": r["device"]})
    return rows


def torch_rows(args, size, batch, here, env):
    cmd = [sys.executable, os.path.join(here, "bench_torch.py"), "--model", args.model, "--size",
           str(size), "--batch", str(batch), "--iters", str(args.iters), "--warmup",
           str(args.warmup), "--json"]
    if args.device == "cpu":
        cmd += ["--device", "cpu", "--threads", str(args.threads)]
        if args.compile:
            cmd.append("--compile")
        if args.bf16:
            cmd.append("--bf16")
    elif f"{size}x{batch}" in (args.compile_at or []):
        cmd.append("--compile")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"bench_torch.py failed (size {size}, batch {batch}):\n{done.stderr}")
    t = json.loads(done.stdout)
    sys.path.insert(0, here)
    from bench_torch import label
    return [{"impl": f"PyTorch {t['torch']} {label(r)}", "size": size, "batch": batch,
             "images_per_second": r["images_per_second"], "device": t["device"]} for r in t["results"]]


def cpu_model():
    """The host CPU's model name (Linux), which names the machine of a CPU run."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crosspool", default="target/release/crosspool")
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--sizes", "--size", type=int, nargs="+", default=[224],
                    help="image sides, each timed at every batch")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                    help="crosspool's --device; cpu also puts PyTorch on the CPU")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both (--device cpu)")
    ap.add_argument("--compile", action="store_true", help="CPU: also time PyTorch under torch.compile")
    ap.add_argument("--compile-at", nargs="*", metavar="SIZExBATCH",
                    help="GPU: also time PyTorch under torch.compile at these points (compiling takes a while)")
    ap.add_argument("--cpu-kernels", nargs="*", default=[], metavar="KERNEL",
                    help="CPU: also time these CROSSPOOL_CPU_CONV kernels (e.g. winograd-mixed winograd4)")
    ap.add_argument("--bf16", action="store_true",
                    help="CPU: also time crosspool --precision bf16 and PyTorch's bf16 autocast")
    ap.add_argument("--rounds", type=int, default=1, help="alternating repetitions; the median is kept")
    ap.add_argument("--simd", choices=["native", "avx2"], default="native",
                    help="CPU: restrict both crosspool and PyTorch to AVX2")
    ap.add_argument("--tag", default="local", help="names the output files: bench_TAG.md/.json/.png")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--unchecked", action="store_true", help="also time crosspool --unchecked-shaders")
    ap.add_argument("--no-f16", action="store_true",
                    help="on a GPU, leave out the crosspool --precision f16 rows (timed by default)")
    ap.add_argument("--f16-scalar", action="store_true",
                    help="on a GPU, also time f16 on the scalar kernels (CROSSPOOL_NO_COOPERATIVE_MATRIX=1)")
    ap.add_argument("--autotune-cache", metavar="PATH",
                    help="GPU: autotune every crosspool run (--autotune on), keeping the tiles in PATH")
    ap.add_argument("--no-torch", action="store_true", help="leave out PyTorch (where it is not installed)")
    ap.add_argument("--only-torch", action="store_true",
                    help="time PyTorch alone (with --append: add its rows to an earlier run's)")
    ap.add_argument("--append", action="store_true",
                    help="add to docs/bench_TAG.json's rows (replacing those of the same implementation, "
                         "size and batch) and rewrite the table and plot from them all")
    ap.add_argument("--no-plot", action="store_true", help="write no .png")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the table and plot from docs/bench_TAG.json")
    args = ap.parse_args()
    json_path = os.path.join(args.out, f"bench_{args.tag}.json")
    if args.render:
        with open(json_path) as f:
            write(args, json.load(f))
        return
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    if args.device == "cpu":
        env["RAYON_NUM_THREADS"] = str(args.threads)
    elif args.autotune_cache:
        env["CROSSPOOL_AUTOTUNE"] = "on"
        env["CROSSPOOL_AUTOTUNE_CACHE"] = args.autotune_cache
    torch_env = dict(env)
    variants = [("crosspool", [], env)]
    if args.device == "cpu":
        simd = "avx512" if args.simd == "native" else "avx2"
        if args.simd == "avx2":
            variants = [("crosspool", [], {**env, "CROSSPOOL_CPU_CONV": "winograd-avx2"})]
            torch_env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        variants.append((f"crosspool, direct {simd} kernel", [], {**env, "CROSSPOOL_CPU_CONV": f"direct-{simd}"}))
        variants.append(("crosspool, gemm kernel (before)", [], {**env, "CROSSPOOL_CPU_CONV": "gemm"}))
        for kernel in args.cpu_kernels:
            variants.append((f"crosspool, {kernel} kernel", [], {**env, "CROSSPOOL_CPU_CONV": kernel}))
        if args.bf16:
            variants.append(("crosspool bf16", ["--precision", "bf16"], env))
    if args.unchecked:
        variants.append(("crosspool unchecked", ["--unchecked-shaders"], env))
    if args.device != "cpu" and not args.no_f16:
        # f16 storage (on cooperative matrices where the GPU has them and they pass their check).
        variants.append(("crosspool f16", ["--precision", "f16"], env))
        if args.f16_scalar:
            variants.append(("crosspool f16, scalar kernels", ["--precision", "f16"],
                             {**env, "CROSSPOOL_NO_COOPERATIVE_MATRIX": "1"}))
    rows = []
    for size in args.sizes:
        for b in args.batches:
            runs = {}
            for _ in range(args.rounds):
                measured = []
                for label, extra, e in ([] if args.only_torch else variants):
                    measured += crosspool_row(args, size, b, label, extra, e)
                if not args.no_torch:
                    measured += torch_rows(args, size, b, here, torch_env)
                for r in measured:
                    runs.setdefault(r["impl"], []).append(r)
            for impl, rs in runs.items():
                r = dict(rs[0])
                r["runs"] = [x["images_per_second"] for x in rs]
                r["date"] = datetime.date.today().isoformat()
                r["machine"] = cpu_model()
                r["images_per_second"] = statistics.median(r["runs"])
                if "gflops" in r:
                    r["gflops"] = statistics.median(x["gflops"] for x in rs)
                rows.append(r)
    if args.no_torch:
        print("bench_compare: PyTorch left out (--no-torch)", file=sys.stderr)
    if args.append and os.path.exists(json_path):
        with open(json_path) as f:
            old = json.load(f)
        new = {(r["impl"], r.get("size"), r["batch"]) for r in rows}
        rows = [r for r in old if (r["impl"], r.get("size"), r["batch"]) not in new] + rows
    write(args, rows)


def write(args, rows):
    """docs/bench_TAG.md, .json and .png from the measured rows (each with its size)."""
    default_size = args.sizes[0]
    for r in rows:
        r.setdefault("size", default_size)
    sizes = sorted({r["size"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    device = rows[0]["device"]
    torch_device = next((r["device"] for r in rows if r["impl"].startswith("PyTorch")), None)
    when = f"Measured {rows[0].get('date', '?')} on a host with {rows[0].get('machine', '?')}. "
    if getattr(args, "simd", "native") == "avx2":
        when += ("Both restricted to AVX2 (crosspool's winograd-avx2 and direct-avx2 kernels, "
                 "PyTorch's oneDNN by ONEDNN_MAX_CPU_ISA=AVX2). ")
    on = f"PyTorch on {torch_device}" if torch_device else "PyTorch not timed"
    lines = [f"# crosspool vs PyTorch: {args.model}, cross-layer features",
             "", when + f"Device: {device}; {on}. Images/s for whole batches: upload,",
             "network to the paper's layer pair, cross-layer pooling, per-channel L2 and signed square",
             f"root, download (median of {args.iters} batches"
             + (f"; median of {args.rounds} alternating rounds" if args.rounds > 1 else "") + ").",
             "", "| implementation | size | batch | images/s | ratio to crosspool |", "|---|---|---|---|---|"]
    for size in sizes:
        for b in batches:
            here = [r for r in rows if r["size"] == size and r["batch"] == b]
            base = next((r["images_per_second"] for r in here if r["impl"] == "crosspool"), None)
            for r in here:
                ratio = f"{r['images_per_second'] / base:.2f}" if base else "-"
                lines.append(f"| {r['impl']} | {size} | {b} | {r['images_per_second']:.4g} | {ratio} |")
    # Where the time goes: each stage submitted alone, its TFLOP/s and (GPU) tile.
    staged = [r for r in rows if r.get("stages") and r["impl"] in ("crosspool", "crosspool f16", "crosspool bf16")]
    for r in staged:
        if r["batch"] != max(x["batch"] for x in staged if x["size"] == r["size"]):
            continue
        lines += ["", f"Stages of {r['impl']}, {r['size']}x{r['size']}, batch {r['batch']} "
                  f"({r.get('precision_path') or 'f32'}): each submitted and waited for alone.", "",
                  "| stage | ms | TFLOP/s | tile |", "|---|---|---|---|"]
        for s in r["stages"]:
            lines.append(f"| {s['stage']} | {s['ms']:.3f} | {s['tflops']:.3g} | {s.get('tile') or ''} |")
    with open(os.path.join(args.out, f"bench_{args.tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, f"bench_{args.tag}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    if not getattr(args, "no_plot", False):
        plot(args, rows, sizes, batches, device)
    print("\n".join(lines))


def plot(args, rows, sizes, batches, device):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot written", file=sys.stderr)
        return
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    points = [(s, b) for s in sizes for b in batches
              if any(r["size"] == s and r["batch"] == b for r in rows)]
    fig, ax = plt.subplots(figsize=(max(9, 1.2 * len(points)), 5.5))
    width = 0.8 / len(impls)
    for i, name in enumerate(impls):
        ys = [next((r["images_per_second"] for r in rows
                    if r["impl"] == name and r["size"] == s and r["batch"] == b), 0) for s, b in points]
        ax.bar([k + i * width for k in range(len(points))], ys, width, label=name)
    ax.set_xticks([k + width * (len(impls) - 1) / 2 for k in range(len(points))])
    ax.set_xticklabels([f"{s}px, batch {b}" for s, b in points], fontsize=8)
    ax.set_ylabel("images/s")
    ax.set_yscale("log")
    ax.set_title(f"{args.model} cross-layer features on {device.split(' (')[0]}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"bench_{args.tag}.png"), dpi=120)


if __name__ == "__main__":
    main()
