#!/usr/bin/env bash
# The browser check of `crosspool serve` (issue 35): indexes tests/data/retrieval without
# astronaut.jpg, serves it, and in headless Chromium chooses astronaut.jpg in the page's file
# input. Passes when the page shows the hits `crosspool search` gives for it, in order, the
# first an astronaut image, each thumbnail loaded, and no page errors. Keeps the screenshot
# at $1 (default: a temporary file; docs/serve.png is the README's).
# Needs tools/install_chromium.sh, the real VGG16 (tools/fetch_weights.sh) and a built binary
# (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/crosspool
work="$(mktemp -d)"
shot="${1:-$work/serve.png}"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

query=tests/data/retrieval/astronaut.jpg
ls tests/data/retrieval/*.jpg | grep -v "/astronaut.jpg$" > "$work/list.txt"
"$bin" extract -q --device cpu --weights weights/vgg16_hed.safetensors --size 224 \
    -o "$work/feats" "$work/list.txt"
"$bin" index "$work/feats" -o "$work/index" >/dev/null 2>&1

"$bin" serve --index "$work/index" --images tests/data/retrieval --port 0 --device cpu \
    2> "$work/serve.log" &
server=$!
for _ in $(seq 1 300); do
    grep -q "open http://" "$work/serve.log" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.2
done
url="$(grep -o 'http://[0-9.:]*/' "$work/serve.log" | head -1)"
[ -n "$url" ] || { echo "browser_check: serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }

"$bin" search --json --device cpu --index "$work/index" --query "$query" --top 8 > "$work/want.json"
node tools/browser_check.cjs "$url" "$query" "$shot" > "$work/shown.json"

python3 - "$work/want.json" "$work/shown.json" "$shot" <<'PY'
import json, sys
want = [h["path"] for h in json.load(open(sys.argv[1]))["results"]]
shown = json.load(open(sys.argv[2]))
got = [h["path"] for h in shown["hits"]]
problems = list(shown["problems"])
if got != want:
    problems.append(f"the page shows {got}, search gives {want}")
if not got or "astronaut_" not in got[0]:
    problems.append(f"the top hit shown is {got[:1]}, not an astronaut image")
for h in shown["hits"]:
    if not h["thumbnail"] or h["thumbnail_width"] == 0:
        problems.append(f"{h['path']}: no thumbnail shown")
if not shown["query_shown"]:
    problems.append("the query image is not shown")
if problems:
    sys.exit("browser_check: FAILED\n  " + "\n  ".join(problems))
print(f"browser_check: the page shows search's {len(got)} hits in order, top {got[0]}; "
      f"screenshot {sys.argv[3]}")
print(f"  {shown['about']}\n  {shown['status']}")
PY
