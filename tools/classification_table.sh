#!/usr/bin/env bash
# The classification table of docs/cli/classify.md, in one run: cross-layer pooling (1x1 and 3x3 local
# features, sum and max over units; AConv when the weights have fc layers) against the SPoC,
# MAC and single-layer Gram baselines on
# tests/data/scenes (17 classes; 5 training and 5 test views each, from disjoint halves of
# each photograph), every representation with the same classifier: one-vs-rest linear SVMs,
# C by 5-fold cross-validation on the training views. Writes docs/classification.{json,md}.
#
#   bash tools/classification_table.sh [WEIGHTS] [-- extra flags for extract and fit-pca]
#
# WEIGHTS defaults to the real VGG16 (HED) of tools/fetch_weights.sh. Runs where
# `--device auto` runs (here: the CPU backend; a GPU where there is one).
set -euo pipefail
cd "$(dirname "$0")/.."
weights="${1:-weights/vgg16_hed.safetensors}"
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
bin=./target/release/crosspool
[ -x "$bin" ] || cargo build --release
[ -f "$weights" ] || bash tools/fetch_weights.sh
data=tests/data/scenes
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$work}"
size=224

# name | extract flags | PCA (window:dims, or -) | size
methods=(
  "cross-layer 1x1 (conv5_2 x conv5_3)|--pooling cross-layer|-|$size"
  "cross-layer 3x3, PCA 4608->512 (conv5_2 x conv5_3)|--pooling cross-layer --window 3x3|3x3:512|$size"
  "cross-layer 1x1, max over units (conv5_2 x conv5_3)|--pooling cross-layer --channel-pooling max|-|$size"
  "SPoC: sum pooling of conv5_3, L2|--pooling sum --layers conv5_3 --norm l2|-|$size"
  "MAC: max pooling of conv5_3, L2|--pooling max --layers conv5_3 --norm l2|-|$size"
  "Gram matrix of conv5_3|--pooling gram --layers conv5_3|-|$size"
)
# AConv (the paper's setting: fc6 at 448, an 8x8 grid for VGG16, PCA to 2,000 dimensions, an
# added layer of 100 filters trained on the training views) needs weights with fc layers.
if "$bin" model-info --weights "$weights" --size 448 | grep -E '^ +fc6 ' | grep -qv 'not in file'; then
  methods+=("AConv: fc6 (PCA 4096->2000) x added 1x1 layer (100 filters), at 448|--aconv ACONV|fc6:2000|448")
else
  echo "classification_table: $weights has no fc layers: no AConv row" >&2
fi
rows="$work/rows.jsonl"
: >"$rows"
i=0
for m in "${methods[@]}"; do
  IFS='|' read -r name flags pca msize <<<"$m"
  i=$((i + 1))
  # shellcheck disable=SC2206
  f=($flags)
  if [ "${f[0]}" = "--aconv" ]; then
    "$bin" train-aconv --weights "$weights" --size "$msize" --labels folder "${extra[@]}" \
      -o "$work/layer$i.aconv" "$data/train" >"$work/$i-aconv.out" 2>"$work/$i-aconv.err"
    f=(--aconv "$work/layer$i.aconv")
  fi
  pca_flags=()
  if [ "$pca" != "-" ]; then
    window="${pca%%:*}"
    dims="${pca##*:}"
    layer_flags=(--window "$window")
    [ "$window" = fc6 ] && layer_flags=(--layer fc6)
    "$bin" fit-pca --weights "$weights" --size "$msize" "${layer_flags[@]}" --dims "$dims" \
      "${extra[@]}" -o "$work/pca$i.safetensors" "$data/train" >/dev/null 2>"$work/$i-pca.err"
    pca_flags=(--pca "$work/pca$i.safetensors")
  fi
  for split in train test; do
    "$bin" extract -q --json --weights "$weights" --size "$msize" --labels folder \
      "${f[@]}" "${pca_flags[@]}" "${extra[@]}" -o "$work/$i-$split" "$data/$split" \
      >"$work/$i-$split.json"
  done
  "$bin" train-classifier "$work/$i-train" --model svm --folds 5 -o "$work/$i.clf" \
    >"$work/$i-train.out" 2>"$work/$i-train.err"
  "$bin" evaluate --classifier "$work/$i.clf" "$work/$i-test" --json >"$work/$i-eval.json"
  python3 - "$name" "$work" "$i" >>"$rows" <<'EOF'
import json, re, sys
name, work, i = sys.argv[1], sys.argv[2], sys.argv[3]
ev = json.load(open(f"{work}/{i}-eval.json"))
ex = [json.load(open(f"{work}/{i}-{s}.json")) for s in ("train", "test")]
err = open(f"{work}/{i}-train.err").read()
out = open(f"{work}/{i}-train.out").read()
c = float(re.search(r"with C ([0-9.e+-]+)", out).group(1))
cv = {float(a): float(b) / 100 for a, b in re.findall(r"C (\S+)\s+cross-validated accuracy ([0-9.]+)%", err)}
shape = ex[0]["feature_shape"]
print(json.dumps({
    "representation": name, "dims": shape[0] * shape[1], "c": c, "cv_accuracy": cv[c],
    "test_accuracy": ev["accuracy"], "test_mean_per_class": ev["mean_per_class_accuracy"],
    "test_images": ev["images"], "classes": len(ev["classes"]),
    "extract_images_per_second": sum(e["processed"] for e in ex) / sum(e["seconds"] for e in ex),
    "device": ex[0]["device"],
}))
EOF
  tail -n 1 "$rows"
done
python3 - "$rows" "$weights" "$size" <<'EOF'
import datetime, json, os, platform, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
meta = {
    "date": datetime.date.today().isoformat(), "weights": os.path.basename(sys.argv[2]),
    "size": int(sys.argv[3]), "data": "tests/data/scenes", "classifier": "one-vs-rest linear SVM (squared hinge), C by 5-fold CV",
    "device": rows[0]["device"], "machine": platform.machine(),
}
try:
    meta["machine"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    pass
json.dump({"meta": meta, "rows": rows}, open("docs/classification.json", "w"), indent=1)
with open("docs/classification.md", "w") as f:
    f.write(f"# Classification on tests/data/scenes\n\n{meta['date']}, {meta['weights']} at "
            f"{meta['size']}x{meta['size']}, {meta['classifier']}, on {meta['device']}. "
            f"Written by `bash tools/classification_table.sh`.\n\n")
    f.write("| representation | dimensions | C | CV accuracy | test accuracy | mean per-class | extract images/s |\n|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r['representation']} | {r['dims']:,} | {r['c']:g} | {100*r['cv_accuracy']:.1f}% | "
                f"{100*r['test_accuracy']:.1f}% | {100*r['test_mean_per_class']:.1f}% | {r['extract_images_per_second']:.1f} |\n")
    n, p = rows[0]["test_images"], sum(r["test_accuracy"] for r in rows) / len(rows)
    f.write(f"\nEach test accuracy is over {n} images of {rows[0]['classes']} classes: one image is "
            f"{100 / n:.1f} points, and the binomial standard error near {100 * p:.0f}% is "
            f"{100 * (p * (1 - p) / n) ** 0.5:.1f} points.\n")
print(open("docs/classification.md").read())
EOF
