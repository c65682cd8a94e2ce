#!/usr/bin/env bash
# The one-shot GPU check: on a machine with a GPU, its Vulkan driver, Python and PyTorch but
# no Rust, measures in one run (at most DEVICE_CHECK_SECONDS, default 480) what the GPU
# questions need, most important first, and writes at most 8 files to $OUT:
#   device_check.log    everything printed;
#   device_check.json   the steps and their times, `crosspool info`, the selftest rows,
#                       f16 fidelity, extract against bench, and the done criteria of
#                       issue 29 as measured;
#   bench_TAG.md/.json/.png      crosspool (f32, f16, f16 on scalar kernels, overlapped;
#                       autotuned, with per-stage times, TFLOP/s and tiles) against PyTorch
#                       (fp32, TF32, fp16 autocast, channels_last, cudnn.benchmark, and
#                       torch.compile at one point) at 224 and 448, batches 1, 8, 32, 64;
#   bench_TAG_cpu.md/.json       the CPU backend against PyTorch on all the host's cores;
#   bench_TAG_resnet50.md        ResNet-50 (layer4.1 x layer4.2) on the GPU against
#                       torchvision's, where time is left (its .json stays in the work folder).
# Steps: `crosspool info`; `crosspool selftest` (all of it); the benchmark points; f16
# fidelity on real weights (cosine to f32 per image); `extract` on real JPEGs decoded on all
# cores, against `bench` at the same size and batch; the CPU backend; torch.compile; ResNet-50. A step
# that fails or runs out of time is recorded and the next one runs; once the budget is spent
# the rest are recorded as skipped.
#
#   bash tools/device_pack.sh          # here: .device/ (stripped binary, f16 weights), .gl/
#   device run, carry [".device", ".gl"]:  bash tools/device_check.sh
#   bash tools/device_check.sh --dry   # CI: the same steps on tiny sizes (software Vulkan)
#
# Inputs: CROSSPOOL_BIN (else .device/crosspool.xz, else target/release/crosspool), WEIGHTS
# (else .device/vgg16_hed_f16.safetensors, else weights/vgg16_hed.safetensors), OUT (else
# device-out/, or a temporary folder with --dry), TAG (h200; dry with --dry), PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

mode=real
case "${1:-}" in
    --dry) mode=dry ;;
    "") ;;
    *) echo "usage: tools/device_check.sh [--dry]" >&2; exit 64 ;;
esac
if [ "$mode" = dry ]; then
    OUT="${OUT:-$(mktemp -d)}"
    TAG="${TAG:-dry}"
    budget="${DEVICE_CHECK_SECONDS:-900}"
    sizes=(32); batches=(1); iters=1; warmup=1
    # Two cores of software Vulkan take longer over each step.
    cap_scale=4
    selftest_args=(--quick); fidelity_size=224; fidelity_dirs="tests/data/photos"
    extract_size=32; extract_batch=1; extract_small=4; extract_big=16
    cpu_batches=(1); cpu_size=32; compile_at=""
    resnet_size=32; resnet_batches=(1)
else
    OUT="${OUT:-$root/device-out}"
    TAG="${TAG:-h200}"
    budget="${DEVICE_CHECK_SECONDS:-480}"
    sizes=(224 448); batches=(8 32 1 64); iters=10; warmup=2
    cap_scale=1
    selftest_args=(); fidelity_size=224; fidelity_dirs="tests/data/photos tests/data/scenes"
    extract_size=224; extract_batch=32; extract_small=64; extract_big=8192
    cpu_batches=(1 8); cpu_size=224; compile_at="224x32"
    resnet_size=224; resnet_batches=(8 32)
fi
export PY="${PYTHON:-python3}"
mkdir -p "$OUT"
work="$(mktemp -d)"
export WORK="$work"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

main() {
echo "device_check ($mode): $(date -u +%FT%TZ), budget ${budget}s, output in $OUT"

# The Vulkan loader where the machine lacks one (the .deb files tools/device_pack.sh put in
# .gl/), and NVIDIA's driver manifest where no other is registered.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    echo "device_check: Vulkan loader unpacked from .gl/"
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] &&
    ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
    export VK_DRIVER_FILES="$nvidia_icd"
    echo "device_check: VK_DRIVER_FILES=$nvidia_icd"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$work}"

# The binary and the weights.
bin="${CROSSPOOL_BIN:-}"
if [ -z "$bin" ] && [ -f .device/crosspool.xz ]; then
    "$PY" -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
        .device/crosspool.xz "$work/crosspool" && chmod +x "$work/crosspool" && bin="$work/crosspool"
fi
[ -z "$bin" ] && [ -x target/release/crosspool ] && bin="$root/target/release/crosspool"
if [ -z "$bin" ]; then
    echo "device_check: no crosspool binary (CROSSPOOL_BIN, .device/crosspool.xz or target/release/crosspool)" >&2
    exit 1
fi
export BIN="$bin"
weights="${WEIGHTS:-}"
for w in .device/vgg16_hed_f16.safetensors weights/vgg16_hed.safetensors; do
    [ -z "$weights" ] && [ -f "$w" ] && weights="$root/$w"
done
export W="$weights"
# One autotuning cache for every step: the benchmark points tune (--autotune on, on software
# Vulkan too), and the other steps tune where crosspool does by default (hardware GPUs),
# reading the choices already made.
export CROSSPOOL_AUTOTUNE_CACHE="$work/conv-tiles.json"
torch_flag=()
if ! "$PY" -c 'import torch' 2>/dev/null; then
    torch_flag=(--no-torch)
    echo "device_check: PyTorch is not installed here: its rows are left out"
fi

# step NAME CAP COMMAND: runs the shell command COMMAND (the functions below are exported
# to it) for at most CAP seconds and what is left of the budget, recording its exit status
# and time in steps.tsv.
step() {
    local name="$1" cap="$2" command="$3"
    local left=$((budget - ($(date +%s) - start)))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (${left}s of the budget left)"
        printf '%s\tskipped\t0\n' "$name" >>"$work/steps.tsv"
        return
    fi
    cap=$((cap * cap_scale))
    local t=$((cap < left ? cap : left))
    echo "== $name (at most ${t}s)"
    local t0 rc
    t0=$(date +%s%N)
    timeout --kill-after=10 "$t" bash -o pipefail -c "$command"
    rc=$?
    local ms=$((($(date +%s%N) - t0) / 1000000))
    local secs
    secs=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    local status=ok
    [ "$rc" -ne 0 ] && status="failed ($rc)"
    [ "$rc" -eq 124 ] && status="timed out"
    echo "== $name: $status in ${secs}s"
    printf '%s\t%s\t%s\n' "$name" "$status" "$secs" >>"$work/steps.tsv"
}

bench_point() {
    "$PY" tools/bench_compare.py --crosspool "$BIN" --tag "$TAG" --out "$OUT" --append \
        --sizes "$1" --batches "$2" --iters "$iters" --warmup "$warmup" --f16-scalar \
        --autotune-cache "$CROSSPOOL_AUTOTUNE_CACHE" $torch_flags
}

fidelity() {
    [ -n "$W" ] || { echo "no real weights"; return 1; }
    for p in f32 f16; do
        "$BIN" extract --device gpu --precision "$p" --weights "$W" --size "$fidelity_size" \
            --quiet --json --out "$WORK/fidelity_$p" $fidelity_dirs >"$WORK/fidelity_$p.json" || return 1
    done
    "$PY" tools/compare_features.py "$WORK/fidelity_f16" "$WORK/fidelity_f32" --min-cosine 0.9999 \
        >"$WORK/fidelity.json"
    local rc=$?
    "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("f16 against f32: %s images, lowest cosine %s (%s)" % (r["images"], r["min_cosine"], r["worst_image"]))' "$WORK/fidelity.json"
    return $rc
}

# extract on real JPEGs (copies of the test set under distinct names) with every core
# decoding: a short run and a long one, so that startup (hashing the weights, compiling
# kernels) can be told from the steady rate.
extract_timing() {
    [ -n "$W" ] || { echo "no real weights"; return 1; }
    # Real photographs only (tests/data/odd holds broken files on purpose).
    mapfile -t jpgs < <(find tests/data/photos tests/data/scenes tests/data/retrieval -name '*.jpg' | sort)
    mkdir -p "$WORK/jpegs"
    local i=0
    while [ "$i" -lt "$extract_big" ]; do
        cp "${jpgs[$((i % ${#jpgs[@]}))]}" "$WORK/jpegs/$(printf '%06d' "$i").jpg"
        i=$((i + 1))
    done
    find "$WORK/jpegs" -name '*.jpg' | sort | head -n "$extract_small" >"$WORK/small.txt"
    find "$WORK/jpegs" -name '*.jpg' | sort >"$WORK/big.txt"
    for run in small big; do
        "$BIN" extract --device gpu --weights "$W" --size "$extract_size" --batch "$extract_batch" \
            --quiet --json --out "$WORK/extract_$run" "$WORK/$run.txt" >"$WORK/extract_$run.json" || return 1
        cat "$WORK/extract_$run.json"
        rm -rf "$WORK/extract_$run"
    done
}

cpu_bench() {
    # bf16 (crosspool on AMX, PyTorch's bf16 autocast) where the host's CPU has AMX-BF16.
    local bf16=""
    if grep -qw amx_bf16 /proc/cpuinfo; then bf16="--bf16"; fi
    "$PY" tools/bench_compare.py --crosspool "$BIN" --device cpu --tag "${TAG}_cpu" --out "$OUT" \
        --sizes "$cpu_size" --batches $cpu_batch_list --iters "$iters" --warmup "$warmup" \
        --no-plot $torch_flags $bf16
}

compile_point() {
    local size="${compile_at%x*}" batch="${compile_at#*x}"
    "$PY" tools/bench_compare.py --crosspool "$BIN" --tag "$TAG" --out "$OUT" --append \
        --sizes "$size" --batches "$batch" --iters "$iters" --warmup "$warmup" \
        --only-torch --compile-at "$compile_at"
}

# ResNet-50 on the GPU (f32, f16) against torchvision's with batch norms folded; only its
# table comes out, so that $OUT keeps to 8 files.
resnet_bench() {
    "$PY" tools/bench_compare.py --crosspool "$BIN" --model resnet50 --tag "${TAG}_resnet50" \
        --out "$WORK" --sizes "$resnet_size" --batches $resnet_batch_list --iters "$iters" \
        --warmup "$warmup" --no-plot --autotune-cache "$CROSSPOOL_AUTOTUNE_CACHE" $torch_flags &&
        cp "$WORK/bench_${TAG}_resnet50.md" "$OUT/"
}

export -f bench_point fidelity extract_timing cpu_bench compile_point resnet_bench
export fidelity_size fidelity_dirs extract_size extract_batch extract_small extract_big TAG OUT
export iters warmup cpu_size compile_at resnet_size
# Arrays do not pass to a child shell: their words do.
export torch_flags="${torch_flag[*]}" cpu_batch_list="${cpu_batches[*]}"
export resnet_batch_list="${resnet_batches[*]}"

step info 30 '"$BIN" info | tee "$WORK/info.txt"'
step selftest 150 '"$BIN" selftest '"${selftest_args[*]}"' --json >"$WORK/selftest.json"'
# The benchmark points in order of weight: batches of 8 and 32 first (the done criteria),
# then 1 and 64; 448 after 224's main points.
points=()
for b in "${batches[@]:0:2}"; do for s in "${sizes[@]}"; do points+=("$s $b"); done; done
for b in "${batches[@]:2}"; do for s in "${sizes[@]}"; do points+=("$s $b"); done; done
n=0
for p in "${points[@]}"; do
    read -r s b <<<"$p"
    step "bench $s batch $b" 120 "bench_point $s $b"
    n=$((n + 1))
    # Fidelity and extract once the points the criteria need are in.
    if [ "$n" -eq "$(( ${#sizes[@]} * 2 < ${#points[@]} ? ${#sizes[@]} * 2 : ${#points[@]} ))" ]; then
        step "f16 fidelity" 60 fidelity
        step "extract" 90 extract_timing
    fi
done
step "cpu backend" 90 cpu_bench
if [ -n "$compile_at" ] && [ ${#torch_flag[@]} -eq 0 ]; then
    step "torch.compile $compile_at" 150 compile_point
fi
step "resnet50" 90 resnet_bench

"$PY" tools/device_check_summary.py --work "$work" --bench "$OUT/bench_${TAG}.json" \
    --extract-point "$extract_size" "$extract_batch" --extract-counts "$extract_small" "$extract_big" \
    --mode "$mode" --out "$OUT/device_check.json"
summary_rc=$?
echo "device_check: done in $(($(date +%s) - start))s; files in $OUT:"
ls -la "$OUT"
return $summary_rc
}

main 2>&1 | tee "$OUT/device_check.log"
exit "${PIPESTATUS[0]}"
