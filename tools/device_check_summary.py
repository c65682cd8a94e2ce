#!/usr/bin/env python3
"""Gathers what tools/device_check.sh measured into device_check.json, and prints the done
criteria of issue 29 as measured (met, missed, or not measured): crosspool f32 against PyTorch
fp32 (cudnn.benchmark), crosspool's fastest mode against PyTorch TF32, the convolutions'
TFLOP/s in f32, f16 fidelity, and extract against bench at the same size and batch.

    python3 tools/device_check_summary.py --work DIR --bench OUT/bench_h200.json \\
        --extract-point 224 32 --extract-counts 64 8192 --mode real --out OUT/device_check.json

Exits 1 if a step failed or the selftest found a wrong kernel (a missed speed target is a
finding, not a failure of the check).
"""
import argparse
import datetime
import json
import os


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def steps(work):
    out = []
    try:
        with open(os.path.join(work, "steps.tsv")) as f:
            for line in f:
                name, status, secs = line.rstrip("\n").split("\t")
                out.append({"step": name, "status": status, "seconds": float(secs)})
    except OSError:
        pass
    return out


def conv_tflops(row):
    """Total convolution FLOPs over their time: each conv stage's ms and TFLOP/s."""
    convs = [s for s in row.get("stages", []) if s["stage"].startswith("conv")]
    ms = sum(s["ms"] for s in convs)
    flop = sum(s["ms"] * 1e-3 * s["tflops"] * 1e12 for s in convs)
    return flop / (ms * 1e-3) / 1e12 if ms > 0 else None


def criteria(rows):
    """The done criteria at each size, for batches of at least 8, as measured."""
    out = []
    if not rows:
        return out
    points = sorted({(r["size"], r["batch"]) for r in rows if r["batch"] >= 8})

    def ips(size, batch, pred):
        found = [r["images_per_second"] for r in rows
                 if r["size"] == size and r["batch"] == batch and pred(r["impl"])]
        return max(found) if found else None

    for size, batch in points:
        f32 = ips(size, batch, lambda i: i == "crosspool")
        fastest = ips(size, batch, lambda i: i.startswith("crosspool"))
        fastest_impl = next((r["impl"] for r in rows if r["size"] == size and r["batch"] == batch
                             and r["impl"].startswith("crosspool") and r["images_per_second"] == fastest), None)
        fp32 = ips(size, batch, lambda i: i.startswith("PyTorch") and " fp32" in i and "compile" not in i)
        tf32 = ips(size, batch, lambda i: i.startswith("PyTorch") and "TF32" in i and "compile" not in i)
        row = next((r for r in rows if r["size"] == size and r["batch"] == batch and r["impl"] == "crosspool"), None)
        tflops = conv_tflops(row) if row else None
        for name, value, target in [
            ("crosspool f32 / PyTorch fp32", f32 / fp32 if f32 and fp32 else None, 1.2),
            (f"crosspool fastest ({fastest_impl}) / PyTorch TF32", fastest / tf32 if fastest and tf32 else None, 1.5),
            ("crosspool f32 convolutions, TFLOP/s", tflops, 45.0),
        ]:
            out.append({"criterion": name, "size": size, "batch": batch, "measured": value,
                        "target": target,
                        "met": None if value is None else value >= target})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--extract-point", type=int, nargs=2, metavar=("SIZE", "BATCH"), required=True)
    ap.add_argument("--extract-counts", type=int, nargs=2, metavar=("SMALL", "BIG"), required=True)
    ap.add_argument("--mode", default="real")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    w = args.work
    rows = load(args.bench) or []
    info = None
    try:
        with open(os.path.join(w, "info.txt")) as f:
            info = f.read()
    except OSError:
        pass
    selftest = load(os.path.join(w, "selftest.json"))
    fidelity = load(os.path.join(w, "fidelity.json"))
    small = load(os.path.join(w, "extract_small.json"))
    big = load(os.path.join(w, "extract_big.json"))
    size, batch = args.extract_point
    extract = None
    if small and big:
        n_small, n_big = args.extract_counts
        steady_secs = big["seconds"] - small["seconds"]
        steady = (n_big - n_small) / steady_secs if steady_secs > 0 else None
        bench = next((r["images_per_second"] for r in rows if r["size"] == size and r["batch"] == batch
                      and r["impl"].startswith("crosspool,") and "in flight" in r["impl"]), None)
        extract = {"size": size, "batch": batch, "images": n_big,
                   "end_to_end_images_per_second": big["images_per_second"],
                   "startup_seconds_estimate": small["seconds"] - n_small * (steady_secs / (n_big - n_small))
                   if steady else None,
                   "steady_images_per_second": steady,
                   "bench_overlapped_images_per_second": bench,
                   "steady_share_of_bench": steady / bench if steady and bench else None,
                   "target_share": 0.9}
    tiles = {}
    for r in rows:
        for s in r.get("stages", []):
            if s.get("tile"):
                tiles.setdefault(f"{r['impl']} {r['size']} batch {r['batch']}", {})[s["stage"]] = s["tile"]
    done = criteria(rows)
    if fidelity:
        done.append({"criterion": "f16 fidelity, lowest cosine to f32 per image",
                     "measured": fidelity.get("min_cosine"), "target": 0.9999,
                     "met": fidelity.get("passed")})
    if extract:
        share = extract["steady_share_of_bench"]
        done.append({"criterion": "extract steady rate / bench overlapped, same size and batch",
                     "size": size, "batch": batch, "measured": share, "target": 0.9,
                     "met": None if share is None else share >= 0.9})
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode,
        "steps": steps(w),
        "info": info,
        "selftest": selftest,
        "fidelity": fidelity,
        "extract": extract,
        "tiles": tiles,
        "criteria": done,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print("\nsteps:")
    for s in summary["steps"]:
        print(f"  {s['step']:<28} {s['status']:<12} {s['seconds']:8.1f} s")
    if selftest:
        print(f"selftest: {selftest['passed']} passed, {selftest['failed']} failed, "
              f"{selftest['unavailable']} not available")
        for r in selftest["rows"]:
            if r["status"] == "fail":
                print(f"  FAIL {r['kernel']} {r['shape']} {r['precision']}: {r['detail']}")
    print("criteria:")
    for c in done:
        where = f" at {c['size']}, batch {c['batch']}" if "size" in c else ""
        m = c["measured"]
        shown = "not measured" if m is None else (f"{m:.7f}" if "cosine" in c["criterion"] else f"{m:.4g}")
        verdict = {True: "met", False: "MISSED", None: "-"}[c["met"]]
        print(f"  {c['criterion']}{where}: {shown} (target {c['target']}) {verdict}")
    failed_steps = [s for s in summary["steps"] if s["status"] not in ("ok", "skipped")]
    wrong = selftest is None or selftest.get("failed", 1) > 0
    raise SystemExit(1 if failed_steps or wrong else 0)


if __name__ == "__main__":
    main()
