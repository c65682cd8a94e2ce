#!/usr/bin/env python3
"""Converts torchvision's pretrained VGG16, VGG19, AlexNet, ResNet-50 or ResNet-101 to crosspool's safetensors file.

Needs torch and torchvision, and internet access the first time (torchvision downloads the
ImageNet weights into its cache), or a state_dict saved earlier (--checkpoint).
Tensor names stay torchvision's (features.N.*, classifier.N.*; conv1, bn1, layerS.B.*, fc.*);
the metadata records the architecture and torchvision's preprocessing (RGB, /255, ImageNet
mean and std). ResNets keep their batch norms' parameters and running statistics in f32
whatever --dtype says (crosspool folds them into the convolutions on load, in f64), and
leave out num_batches_tracked (a training counter).

    python3 tools/convert_torchvision.py vgg16                       # -> weights/vgg16.safetensors
    python3 tools/convert_torchvision.py alexnet --dtype f16
    python3 tools/convert_torchvision.py --arch resnet50             # ImageNet weights, V2 recipe
    python3 tools/convert_torchvision.py vgg19 --checkpoint vgg19-dcbb9e9d.pth
"""
import argparse
import os
import tempfile

import torch
import torchvision
from safetensors.torch import save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ARCHS = ["vgg16", "vgg19", "alexnet", "resnet50", "resnet101"]
# torchvision's weight enums, by architecture.
WEIGHTS = {"vgg16": "VGG16", "vgg19": "VGG19", "alexnet": "AlexNet", "resnet50": "ResNet50",
           "resnet101": "ResNet101"}


def is_batch_norm(name, model):
    """Whether state_dict entry `name` belongs to a BatchNorm2d module."""
    module = name.rsplit(".", 1)[0]
    return isinstance(model.get_submodule(module), torch.nn.BatchNorm2d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", nargs="?", choices=ARCHS)
    ap.add_argument("--arch", dest="arch_flag", choices=ARCHS, help="the same as the positional name")
    ap.add_argument("--out", help="output file (default weights/ARCH.safetensors)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    ap.add_argument("--checkpoint", help="a torchvision state_dict (.pth) instead of downloading")
    ap.add_argument("--untrained", action="store_true",
                    help="randomly initialised weights (for testing this script offline)")
    args = ap.parse_args()
    if (args.arch is None) == (args.arch_flag is None):
        ap.error("name one architecture, as ARCH or --arch ARCH")
    args.arch = args.arch or args.arch_flag
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
        weights = torchvision.models.get_weight(f"{WEIGHTS[args.arch]}_Weights.DEFAULT")
        model = builder(weights=weights)
        source = f"torchvision {torchvision.__version__} {weights}"
    tensors = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        dtype = torch.float32 if is_batch_norm(k, model) else DTYPES[args.dtype]
        tensors[k] = v.detach().to(dtype).contiguous()
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
