#!/usr/bin/env bash
# Decode-and-resize throughput on real 4 MP photographs: crosspool (`bench --decode-only`,
# --decode fast and exact) against Pillow (full and draft) and torchvision.io.decode_jpeg
# (tools/bench_decode.py), on the same files, cores and target size, in alternating rounds so
# that drift on the machine touches every method alike. Writes docs/bench_decode.json (every
# round) and, from it, docs/bench_decode.md (medians; tools/bench_decode.py --render).
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
EOF
"$python" tools/bench_decode.py --render docs/bench_decode.json >docs/bench_decode.md
cat docs/bench_decode.md
