#!/usr/bin/env python3
"""Decode-and-resize throughput of the Python loaders crosspool is compared with.

Every method reads each file of DIR from disk, decodes it to RGB and resizes the whole image
to SIZE x SIZE (bilinear, as `crosspool bench --decode-only` does) into a numpy uint8 array:

  pillow-full    Image.open + convert("RGB") + resize: full-size decode (libjpeg-turbo).
  pillow-draft   the same after Image.draft("RGB", (SIZE, SIZE)): libjpeg-turbo decodes at
                 1/2, 1/4 or 1/8 scale keeping both sides >= SIZE (what fast loaders do).
  torchvision    torchvision.io.decode_jpeg (libjpeg-turbo, full size) + resize (antialiased
                 bilinear), one torch thread per worker.

Each method runs on all cores (a thread pool of os.cpu_count() workers: Pillow and torch
release the GIL while decoding and resizing) and on one worker thread; the rate is the median of
--iters passes over every file, after one untimed pass that warms the file cache.
Prints JSON on standard output. With --render FILE, prints the Markdown report of the JSON
that tools/bench_decode.sh wrote instead.
"""

import argparse
import concurrent.futures as cf
import json
import os
import pathlib
import platform
import statistics
import sys
import time


def pillow_methods(size):
    import numpy as np
    from PIL import Image

    def full(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))

    def draft(path):
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))

    return {"pillow-full": full, "pillow-draft": draft}


def torchvision_method(size):
    import torch
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    torch.set_num_threads(1)

    def tv(path):
        img = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
        return F.resize(img, [size, size], antialias=True).permute(1, 2, 0).numpy()

    return {"torchvision": tv}, f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def rate(fn, files, threads, iters):
    # One core runs in a pool of one as well: on Python's main thread glibc returns the big
    # decode buffers to the system after every image and pays page faults for them again,
    # which makes Pillow's full decode 2.7x slower there than in a worker thread.
    def one_pass(pool):
        t = time.perf_counter()
        list(pool.map(fn, files))
        return len(files) / (time.perf_counter() - t)

    with cf.ThreadPoolExecutor(threads) as pool:
        one_pass(pool)  # file cache, lazy imports, thread start
        return statistics.median(one_pass(pool) for _ in range(iters))


NAMES = {
    "crosspool-fast": "crosspool `--decode fast` (libjpeg-turbo at 1/2-1/8 DCT scale)",
    "crosspool-exact": "crosspool `--decode exact` (zune-jpeg, full size)",
    "pillow-draft": "Pillow `draft` (libjpeg-turbo at 1/2-1/8 DCT scale)",
    "pillow-full": "Pillow, full size",
    "torchvision": "torchvision.io.decode_jpeg, full size, + resize",
}


def render(path):
    """The Markdown report of tools/bench_decode.sh's JSON."""
    d = json.loads(pathlib.Path(path).read_text())
    med, n = d["median"], d["machine"]["cores"]
    draft, full = med["pillow-draft"], med["pillow-full"]
    packages = [
        " ".join(w for w in line.split() if w not in ("Package:", "Version:"))
        for line in d["photos"]["from"]
    ]
    lines = [
        "# Decoding and resizing real photographs",
        "",
        f"Written by `tools/bench_decode.sh` on {d['date']} (crosspool {d['crosspool_commit']}):",
        f"{d['photos']['count']} photographs, every distinct 2560x1600 JPEG (baseline and progressive) of",
        f"the Debian packages {', '.join(packages)}, each read from disk, decoded and resized",
        f"to {d['size']}x{d['size']} RGB, on {d['machine']['cpu']} ({n} cores). Median of "
        f"{len(d['rounds']['crosspool-fast'])} alternating rounds,",
        "each the median of 7 passes over every file. Python: " + "; ".join(d["versions"].values()) + ".",
        "crosspool's figures include what its input path does beyond the others: the EXIF",
        "orientation check and the conversion to the network's float input.",
        "",
        f"| method | images/s, {n} cores | images/s, one core | vs Pillow draft, {n} cores | vs Pillow full, {n} cores |",
        "|---|---|---|---|---|",
    ]
    for k, name in NAMES.items():
        if k in med:
            m = med[k]
            lines.append(
                f"| {name} | {m['images_per_second']:.1f} | {m['images_per_second_one_core']:.1f} "
                f"| {m['images_per_second'] / draft['images_per_second']:.2f}x "
                f"| {m['images_per_second'] / full['images_per_second']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        sys.stdout.write(render(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    files = sorted(p for p in a.dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        sys.exit(f"bench_decode: no JPEG files in {a.dir}")

    import PIL
    import PIL.features

    methods = pillow_methods(a.size)
    versions = {
        "pillow": f"Pillow {PIL.__version__}, libjpeg-turbo {PIL.features.version('libjpeg_turbo')}"
    }
    try:
        tv, v = torchvision_method(a.size)
        methods.update(tv)
        versions["torchvision"] = v
    except ImportError as e:
        print(f"bench_decode: torchvision not timed ({e})", file=sys.stderr)

    results = {}
    for name, fn in methods.items():
        results[name] = {
            "images_per_second": rate(fn, files, a.threads, a.iters),
            "images_per_second_one_core": rate(fn, files, 1, a.iters),
        }
        print(f"bench_decode: {name}: {results[name]}", file=sys.stderr)
    json.dump(
        {
            "images": len(files),
            "dir": str(a.dir),
            "size": a.size,
            "threads": a.threads,
            "iters": a.iters,
            "python": platform.python_version(),
            "versions": versions,
            "methods": results,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
