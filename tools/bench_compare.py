#!/usr/bin/env python3
"""Runs `crosspool bench` and tools/bench_torch.py on the same device, sizes and batches, and
writes docs/bench_TAG.md (a table), docs/bench_TAG.json and docs/bench_TAG.png (a plot). Needs
torch, torchvision and matplotlib; the crosspool binary must be built (cargo build --release).

    python3 tools/bench_compare.py --tag h100 --batches 1 8 32
    python3 tools/bench_compare.py --tag lavapipe --batches 1 4 --iters 3 --warmup 1
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crosspool", default="target/release/crosspool")
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tag", default="local", help="names the output files: bench_TAG.md/.json/.png")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--unchecked", action="store_true", help="also time crosspool --unchecked-shaders")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    for b in args.batches:
        common = ["--model", args.model, "--size", str(args.size), "--batch", str(b), "--iters", str(args.iters),
                  "--warmup", str(args.warmup), "--json"]
        variants = [("crosspool", [])] + ([("crosspool unchecked", ["--unchecked-shaders"])] if args.unchecked else [])
        for label, extra in variants:
            r = json.loads(subprocess.run([args.crosspool, "bench", *extra, *common], check=True,
                                          capture_output=True, text=True).stdout)
            rows.append({"impl": label, "batch": b, "images_per_second": r["images_per_second"],
                         "gflops": r["gflops"], "device": r["device"]})
        t = json.loads(subprocess.run([sys.executable, os.path.join(here, "bench_torch.py"), *common[:-1], "--json"],
                                      check=True, capture_output=True, text=True).stdout)
        for r in t["results"]:
            label = f"PyTorch {t['torch']} " + ("TF32 (default)" if r["tf32"] else "fp32")
            rows.append({"impl": label, "batch": b, "images_per_second": r["images_per_second"],
                         "device": t["device"]})
    device = rows[0]["device"]
    lines = [f"# crosspool vs PyTorch: {args.model}, {args.size}x{args.size}, cross-layer features",
             "", f"Device: {device}. Images/s for whole batches: upload, network to the paper's layer pair,",
             "cross-layer pooling, per-channel L2 and signed square root, download (median of "
             f"{args.iters}).", "", "| implementation | batch | images/s | ratio to crosspool |", "|---|---|---|---|"]
    for b in args.batches:
        base = next(r["images_per_second"] for r in rows if r["batch"] == b and r["impl"] == "crosspool")
        for r in rows:
            if r["batch"] == b:
                lines.append(f"| {r['impl']} | {b} | {r['images_per_second']:.3g} | {r['images_per_second'] / base:.2f} |")
    with open(os.path.join(args.out, f"bench_{args.tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, f"bench_{args.tag}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / len(impls)
        for i, name in enumerate(impls):
            ys = [next((r["images_per_second"] for r in rows if r["impl"] == name and r["batch"] == b), 0) for b in args.batches]
            ax.bar([k + i * width for k in range(len(args.batches))], ys, width, label=name)
        ax.set_xticks([k + width * (len(impls) - 1) / 2 for k in range(len(args.batches))])
        ax.set_xticklabels([f"batch {b}" for b in args.batches])
        ax.set_ylabel("images/s")
        ax.set_title(f"{args.model} {args.size}x{args.size} cross-layer features on {device.split(' (')[0]}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, f"bench_{args.tag}.png"), dpi=120)
    except ImportError:
        print("matplotlib missing: no plot written", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
