#!/usr/bin/env python3
"""What `--decode fast` costs in fidelity: features and retrieval with fast and exact decoding.

For each image set and size, extracts VGG16 cross-layer features (the defaults: conv5_2 x
conv5_3, norm paper) with --decode fast and --decode exact and compares them image by image
(cosine of the whole feature). On tests/data/retrieval it also runs docs/retrieval.md's retrieval
chain (fit-pca on tests/data/photos, extract --norm retrieval, index, eval) in each mode and
reports mAP. Writes docs/decode_fidelity.{json,md}. Needs numpy, the release binary and
weights/vgg16_hed.safetensors (tools/fetch_weights.sh); runs on any adapter (minutes on
software Vulkan).

  weights/.venv/bin/python tools/decode_fidelity.py [--photos-4mp bench/photos_4mp]
  weights/.venv/bin/python tools/decode_fidelity.py --render docs/decode_fidelity.json
"""

import argparse
import datetime
import json
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/crosspool"
WEIGHTS = ROOT / "weights/vgg16_hed.safetensors"


def run(*args):
    r = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"decode_fidelity: crosspool {' '.join(map(str, args))} failed:\n{r.stderr}")
    return r.stdout


def jpeg_size(path):
    data = path.read_bytes()
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def scaled(path, size):
    """Whether --decode fast decodes `path` at reduced scale for `size`."""
    wh = jpeg_size(path)
    return wh is not None and min(wh) >= 2 * size


def features(tmp, images, size, mode, extra=(), tag=""):
    out = tmp / f"{images.name}-{size}-{mode}{tag}"
    run("extract", "--quiet", "--weights", WEIGHTS, "--size", size, "--decode", mode,
        "--out", out, *extra, images)
    run("export-npy", out, "--out", f"{out}.npy")
    x = np.load(f"{out}.npy")
    return out, x.reshape(len(x), -1).astype(np.float64)


def compare(tmp, images, size):
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    _, fast = features(tmp, images, size, "fast")
    _, exact = features(tmp, images, size, "exact")
    assert fast.shape == exact.shape and len(fast) == len(files), (fast.shape, len(files))
    cos = (fast * exact).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(exact, axis=1))
    flags = [scaled(p, size) for p in files]
    sc = cos[np.array(flags, dtype=bool)]
    return {
        "set": str(images.relative_to(ROOT)) if images.is_relative_to(ROOT) else str(images),
        "size": size,
        "images": len(files),
        "scaled": int(sum(flags)),
        "identical": int(sum(np.array_equal(a, b) for a, b in zip(fast, exact))),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "cosine_min_scaled": float(sc.min()) if len(sc) else None,
        "cosine_mean_scaled": float(sc.mean()) if len(sc) else None,
    }


def retrieval(tmp, size, mode):
    photos, db = ROOT / "tests/data/photos", ROOT / "tests/data/retrieval"
    pca = tmp / f"pca-{size}-{mode}.safetensors"
    run("fit-pca", "--weights", WEIGHTS, "--size", size, "--decode", mode, "--out", pca, photos)
    out, _ = features(tmp, db, size, mode, ["--pca", pca, "--norm", "retrieval"], "-pca")
    res = {}
    for kind, flags, k in [("bits1", [], "50"), ("floats", ["--binarize", "none"], "all")]:
        index = tmp / f"index-{size}-{mode}-{kind}"
        run("index", out, "--out", index, *flags)
        e = json.loads(run("eval", "--json", "--index", index, "--ground-truth",
                           db / "groundtruth.jsonl", "-k", k))
        res[kind] = {"k": k, "map": e["map"], "recall_at_1": e["recall_at_1"]}
    return res


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        sys.stdout.write(render(json.loads(pathlib.Path(sys.argv[2]).read_text())))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos-4mp", type=pathlib.Path, default=ROOT / "bench/photos_4mp")
    a = ap.parse_args()
    for need in (BIN, WEIGHTS):
        if not need.exists():
            sys.exit(f"decode_fidelity: {need} is missing (cargo build --release; tools/fetch_weights.sh)")
    device = run("info").strip().splitlines()[0].split(":", 1)[-1].strip()
    rows, maps = [], []
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        sets = [(ROOT / "tests/data/photos", 224), (ROOT / "tests/data/retrieval", 160),
                (ROOT / "tests/data/photos", 112), (ROOT / "tests/data/retrieval", 112)]
        if a.photos_4mp.is_dir():
            sets.append((a.photos_4mp.resolve(), 224))
        for images, size in sets:
            rows.append(compare(tmp, images, size))
            print(f"decode_fidelity: {rows[-1]}", file=sys.stderr)
        for size in (160, 112):
            for mode in ("fast", "exact"):
                maps.append({"size": size, "decode": mode, **retrieval(tmp, size, mode)})
                print(f"decode_fidelity: {maps[-1]}", file=sys.stderr)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    out = {"date": datetime.date.today().isoformat(), "crosspool_commit": commit,
           "device": device, "weights": "VGG16 (HED), conv5_2 x conv5_3, norm paper",
           "features": rows, "retrieval": maps}
    (ROOT / "docs/decode_fidelity.json").write_text(json.dumps(out, indent=1) + "\n")
    md = render(out)
    (ROOT / "docs/decode_fidelity.md").write_text(md)
    print(md)


def render(out):
    """The Markdown report of the JSON this script writes."""
    rows, maps = out["features"], out["retrieval"]
    md = ["# What `--decode fast` changes", "",
          f"Written by `tools/decode_fidelity.py` on {out['date']} (crosspool {out['crosspool_commit']},",
          f"{out['device']}). Per-image cosine between the features of `--decode fast` and",
          "`--decode exact` (VGG16 cross-layer conv5_2 x conv5_3, norm paper); \"scaled\" counts the",
          "images that fast decodes at reduced DCT scale (at least twice the size on both sides);",
          "the others are decoded identically.", "",
          "| set | size | images | scaled | identical features | min cosine (scaled) | mean cosine (scaled) |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = "n/a" if r["cosine_min_scaled"] is None else f"{r['cosine_min_scaled']:.5f}"
        m = "n/a" if r["cosine_mean_scaled"] is None else f"{r['cosine_mean_scaled']:.5f}"
        md.append(f"| {r['set']} | {r['size']} | {r['images']} | {r['scaled']} | {r['identical']} | {s} | {m} |")
    md += ["", "Retrieval on tests/data/retrieval (PCA fitted on tests/data/photos in the same mode):", "",
           "| size | decode | 1-bit codes, k = 50: mAP | recall@1 | floats, cosine: mAP | recall@1 |",
           "|---|---|---|---|---|---|"]
    for m in maps:
        md.append(f"| {m['size']} | {m['decode']} | {m['bits1']['map']:.4f} | {m['bits1']['recall_at_1']:.3f} "
                  f"| {m['floats']['map']:.4f} | {m['floats']['recall_at_1']:.3f} |")
    return "\n".join(md) + "\n"

if __name__ == "__main__":
    main()
