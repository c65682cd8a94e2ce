#!/usr/bin/env bash
# Decode-and-resize throughput on real 4 MP photographs: crosspool (`bench --decode-only`,
# --decode fast and exact) against Pillow (full and draft) and torchvision.io.decode_jpeg
# (tools/bench_decode.py), on the same files, cores and target size, in alternating rounds so
# that drift on the machine touches every method alike. Writes docs/bench_decode.json (every
# round) and docs/bench_decode.md (medians).
#
#   bash tools/bench_decode.sh [ROUNDS]
#
# BENCH_PYTHON: a Python with Pillow and numpy (and torch + torchvision, to time those);
# default: a virtual environment in bench/.venv with Pillow and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
photos=bench/photos_4mp
bash tools/fetch_photos_4mp.sh "$photos"
python="${BENCH_PYTHON:-}"
if [ -z "$python" ]; then
    if [ ! -x bench/.venv/bin/python ]; then
        python3 -m venv bench/.venv
    fi
    bench/.venv/bin/python -m pip install --quiet --disable-pip-version-check pillow numpy
    python=bench/.venv/bin/python
fi
cargo build --release --quiet
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
for r in $(seq "$rounds"); do
    for mode in fast exact; do
        ./target/release/crosspool bench --decode-only --images "$photos" --decode "$mode" \
            --iters 7 --json | sed "s/^/crosspool-$mode $r /" >>"$raw"
    done
    "$python" tools/bench_decode.py "$photos" --iters 7 | tr -d '\n' | sed "s/^/python $r /" >>"$raw"
    echo >>"$raw"
    echo "bench_decode: round $r of $rounds done" >&2
done
"$python" - "$raw" "$photos" <<'EOF'
import json, platform, statistics, subprocess, sys, datetime

raw, photos = sys.argv[1], sys.argv[2]
rounds = {}
meta = {}
for line in open(raw):
    if not line.strip():
        continue
    who, r, text = line.split(" ", 2)
    d = json.loads(text)
    if who == "python":
        meta.update({k: d[k] for k in ("versions", "python", "threads", "images", "size")})
        for name, v in d["methods"].items():
            rounds.setdefault(name, []).append(v)
    else:
        rounds.setdefault(who, []).append({
            "images_per_second": d["decode_images_per_second"],
            "images_per_second_one_core": d["decode_images_per_second_one_core"],
        })
med = {
    name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
    for name, runs in rounds.items()
}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
packages = open(f"{photos}/PACKAGES.txt").read().strip().splitlines()
out = {
    "date": datetime.date.today().isoformat(),
    "machine": {"cpu": cpu, "cores": meta["threads"], "os": platform.platform()},
    "crosspool_commit": commit,
    "photos": {"dir": photos, "count": meta["images"], "from": packages,
               "what": "every distinct 2560x1600 JPEG of those packages (baseline and progressive)"},
    "size": meta["size"],
    "python": meta["python"],
    "versions": meta["versions"],
    "rounds": rounds,
    "median": med,
}
json.dump(out, open("docs/bench_decode.json", "w"), indent=1)
draft, full = med["pillow-draft"], med["pillow-full"]
names = {
    "crosspool-fast": "crosspool `--decode fast` (libjpeg-turbo, 1/2-1/8 DCT scale)",
    "crosspool-exact": "crosspool `--decode exact` (zune-jpeg, full size)",
    "pillow-draft": "Pillow `draft` (libjpeg-turbo, 1/2-1/8 DCT scale)",
    "pillow-full": "Pillow, full size",
    "torchvision": "torchvision.io.decode_jpeg + resize (full size)",
}
lines = [
    "# Decoding and resizing real photographs",
    "",
    f"Written by `tools/bench_decode.sh` on {out['date']} (crosspool {commit}): {meta['images']} distinct",
    f"2560x1600 JPEGs ({out['photos']['what']}) from Debian's {', '.join(p.split()[1] for p in packages)},",
    f"decoded and resized to {meta['size']}x{meta['size']} RGB on {cpu}, {meta['threads']} cores.",
    f"Median of {len(rounds['crosspool-fast'])} alternating rounds, each the median of 7 passes over every file.",
    "Python: " + "; ".join(meta["versions"].values()) + ".",
    "",
    f"| method | images/s, {meta['threads']} cores | images/s, one core | vs Pillow draft ({meta['threads']} cores) | vs Pillow full ({meta['threads']} cores) |",
    "|---|---|---|---|---|",
]
for k in ["crosspool-fast", "crosspool-exact", "pillow-draft", "pillow-full", "torchvision"]:
    if k in med:
        m = med[k]
        lines.append(
            f"| {names[k]} | {m['images_per_second']:.1f} | {m['images_per_second_one_core']:.1f} "
            f"| {m['images_per_second'] / draft['images_per_second']:.2f}x | {m['images_per_second'] / full['images_per_second']:.2f}x |"
        )
open("docs/bench_decode.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
