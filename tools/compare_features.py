#!/usr/bin/env python3
"""The cosine, image by image, between the features of two `crosspool extract` runs over the
same inputs (say --precision f16 against f32), matched by path through the manifests.

Pure Python (no numpy), so that it runs wherever crosspool's output does.

    python3 tools/compare_features.py feats_f16/ feats_f32/ --min-cosine 0.9999

Prints JSON: the images compared, the lowest cosine and its image, each image's cosine, and
whether every one reaches --min-cosine; exits 1 if not (or if the runs share no image).
"""
import argparse
import array
import glob
import json
import math
import os
import struct
import sys


def read_features(path):
    """`features` of one shard: (rows, values per row, flat array of floats)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    t = header["features"]
    start, end = t["data_offsets"]
    raw = data[start:end]
    if t["dtype"] == "F32":
        values = array.array("f")
        values.frombytes(raw)
    elif t["dtype"] == "F16":
        values = array.array("f", struct.unpack(f"<{len(raw) // 2}e", raw))
    else:
        raise SystemExit(f"{path}: features of dtype {t['dtype']} are not compared here")
    if sys.byteorder != "little":
        values.byteswap()
    rows = t["shape"][0]
    return rows, len(values) // max(rows, 1), values


def load(directory):
    """{path: list of floats} for every ok row of an extract directory."""
    shards, out = {}, {}
    for manifest in sorted(glob.glob(os.path.join(directory, "*.jsonl"))):
        with open(manifest) as f:
            for line in f:
                r = json.loads(line)
                if r.get("status") != "ok":
                    continue
                shard = os.path.join(directory, r["shard"])
                if shard not in shards:
                    shards[shard] = read_features(shard)
                _, per, values = shards[shard]
                out[r["path"]] = values[r["row"] * per:(r["row"] + 1) * per]
    return out


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("got")
    ap.add_argument("want")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()
    got, want = load(args.got), load(args.want)
    common = sorted(set(got) & set(want))
    per_image = {p: cosine(got[p], want[p]) for p in common}
    worst = min(per_image, key=lambda p: per_image[p], default=None)
    lowest = per_image[worst] if worst is not None else None
    # NaN compares false, so an image without a cosine fails.
    passed = bool(common) and all(c >= args.min_cosine for c in per_image.values())
    print(json.dumps({"images": len(common), "only_in_got": len(set(got) - set(want)),
                      "only_in_want": len(set(want) - set(got)), "min_cosine": lowest,
                      "worst_image": worst, "required": args.min_cosine, "passed": passed,
                      "per_image": per_image}, indent=1))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
