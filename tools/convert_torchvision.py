#!/usr/bin/env python3
"""Converts torchvision's pretrained VGG16, VGG19 or AlexNet to crosspool's safetensors file.

Needs torch and torchvision, and internet access the first time (torchvision downloads the
ImageNet weights into its cache), or a state_dict saved earlier (--checkpoint).
Tensor names stay torchvision's (features.N.*, classifier.N.*); the metadata records the
architecture and torchvision's preprocessing (RGB, /255, ImageNet mean and std).

    python3 tools/convert_torchvision.py vgg16                       # -> weights/vgg16.safetensors
    python3 tools/convert_torchvision.py alexnet --dtype f16
    python3 tools/convert_torchvision.py vgg19 --checkpoint vgg19-dcbb9e9d.pth
"""
import argparse
import os
import tempfile

import torch
import torchvision
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=["vgg16", "vgg19", "alexnet"])
    ap.add_argument("--out", help="output file (default weights/ARCH.safetensors)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--checkpoint", help="a torchvision state_dict (.pth) instead of downloading")
    ap.add_argument("--untrained", action="store_true",
                    help="randomly initialised weights (for testing this script offline)")
    args = ap.parse_args()
    out = args.out or os.path.join("weights", f"{args.arch}.safetensors")

    builder = getattr(torchvision.models, args.arch)
    if args.checkpoint:
        model = builder(weights=None)
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        source = os.path.basename(args.checkpoint)
    elif args.untrained:
        model = builder(weights=None)
        source = "untrained (random initialisation)"
    else:
        weights = torchvision.models.get_weight(f"{args.arch.upper() if args.arch != 'alexnet' else 'AlexNet'}_Weights.DEFAULT")
        model = builder(weights=weights)
        source = f"torchvision {torchvision.__version__} {weights}"
    tensors = {k: v.detach().to(DTYPES[args.dtype]).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "crosspool.arch": args.arch,
        "crosspool.channel_order": "rgb",
        "crosspool.pixel_scale": repr(1.0 / 255.0),
        "crosspool.mean": "0.485,0.456,0.406",
        "crosspool.std": "0.229,0.224,0.225",
        "source": source,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), suffix=".partial")
    os.close(fd)
    save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"wrote {out}: {len(tensors)} tensors ({args.dtype}) from {source}")


if __name__ == "__main__":
    main()
