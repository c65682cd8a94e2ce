#!/usr/bin/env python3
"""Writes golden activations for tests/golden.rs from torchvision's own modules.

The networks are torchvision's VGG16, VGG19, AlexNet, ResNet-50 and ResNet-101 with seeded
weights from the same SplitMix64 generator as tests/common/mod.rs (so the weights need not be
committed), run in float64 on the CPU at low resolution. Activations are taken after each
ReLU (torchvision's ReLUs are in-place, so hooks sit on the ReLU modules; ResNet's blocks
are stepped through module by module, and checked against torchvision's own forward) and
after pooling, stored NHWC as f32.

Needs torch, torchvision, numpy and safetensors (any version; CPU is enough):
    python3 tools/make_golden.py --out tests/golden
"""
import argparse
import os

import numpy as np
import torch
import torchvision
from safetensors.numpy import save_file

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def random(n, seed):
    """Values in [-1, 1): bit-identical to `random` in tests/common/mod.rs."""
    s0 = ((seed * GOLDEN) & MASK) ^ 0xD1B54A32D192ED03
    with np.errstate(over="ignore"):
        z = np.uint64(s0) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) * np.float32(2) - np.float32(1)


def seeded_state_dict(model):
    """Weight j (in module order) = random(seed 1000 + 2j) * sqrt(2 / fan_in); bias = random(1001 + 2j) * 0.1."""
    sd = {}
    j = 0
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight
            fan_in = int(np.prod(w.shape[1:]))
            scale = np.float32(np.sqrt(2.0 / fan_in))
            sd[f"{name}.weight"] = torch.from_numpy((random(w.numel(), 1000 + 2 * j) * scale).reshape(w.shape))
            sd[f"{name}.bias"] = torch.from_numpy(random(m.bias.numel(), 1001 + 2 * j) * np.float32(0.1))
            j += 1
    return sd


def layer_names(model, arch):
    """Module index in `features` -> crosspool layer name (ReLU modules carry the conv's name)."""
    names, block, conv_in_block, conv_count = {}, 1, 0, 0
    for i, m in enumerate(model.features):
        if isinstance(m, torch.nn.Conv2d):
            conv_in_block += 1
            conv_count += 1
            cur = f"conv{block}_{conv_in_block}" if arch != "alexnet" else f"conv{conv_count}"
        elif isinstance(m, torch.nn.ReLU):
            names[i] = cur
        elif isinstance(m, torch.nn.MaxPool2d):
            names[i] = f"pool{block}" if arch != "alexnet" else {1: "pool1", 2: "pool2", 5: "pool5"}[conv_count]
            block += 1
            conv_in_block = 0
    return names


def golden(arch, size, batch, keep, out_dir):
    model = getattr(torchvision.models, arch)(weights=None)
    model.load_state_dict(seeded_state_dict(model))
    model = model.double().eval()
    x = random(batch * size * size * 3, 7).reshape(batch, size, size, 3)
    names = layer_names(model, arch)
    acts = {}

    def hook(module, name):
        module.register_forward_hook(lambda mod, inp, out: acts.__setitem__(name, out.detach().clone()))

    for i, m in enumerate(model.features):
        if i in names and names[i] in keep:
            hook(m, names[i])
    # The classifier: fc6 and fc7 after their ReLUs, fc8 as the final Linear.
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Linear)]
    for name, i in zip(["fc6", "fc7", "fc8"], linears):
        if name in keep:
            hook(model.classifier[i + 1] if name != "fc8" else model.classifier[i], name)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
        if any(k.startswith("fc") for k in keep):
            model(t)
        else:
            model.features(t)
    missing = set(keep) - set(acts)
    assert not missing, missing
    tensors = {"input": np.ascontiguousarray(x)}
    for n, a in acts.items():
        a = a.numpy()
        if a.ndim == 2:  # fc: one position
            a = a[:, :, None, None]
        tensors[n] = np.ascontiguousarray(a.transpose(0, 2, 3, 1).astype(np.float32))
    save(tensors, (arch, size, batch), "seeded_state_dict", out_dir)


def save(tensors, run, weights, out_dir):
    """Writes `tensors` to OUT_DIR/ARCH_SIZE.safetensors with what made them in the metadata;
    `run` is (arch, size, batch), `weights` the function that seeded them."""
    arch, size, batch = run
    meta = {
        "arch": arch, "size": str(size), "batch": str(batch),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "weights": f"tools/make_golden.py {weights}", "dtype": "float64 forward, stored f32",
    }
    path = os.path.join(out_dir, f"{arch}_{size}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(path, {k: v.shape for k, v in tensors.items()})


def resnet_convs(model):
    """(conv module, its batch norm, crosspool layer name) in crosspool's layer order: the stem,
    then per bottleneck conv1, conv2, the downsampling shortcut, conv3 (the block output)."""
    out = [("conv1", "bn1", "conv1")]
    for s in range(1, 5):
        for b, block in enumerate(getattr(model, f"layer{s}")):
            p = f"layer{s}.{b}"
            out += [(f"{p}.conv1", f"{p}.bn1", f"{p}.conv1"), (f"{p}.conv2", f"{p}.bn2", f"{p}.conv2")]
            if block.downsample is not None:
                out.append((f"{p}.downsample.0", f"{p}.downsample.1", f"{p}.downsample"))
            out.append((f"{p}.conv3", f"{p}.bn3", p))
    return out


def seeded_resnet_state_dict(model):
    """Conv j (crosspool's order) = random(1000 + 2j) * sqrt(2 / fan_in), no bias; its batch
    norm: weight 0.5 + 0.25 random(3000 + 4j), bias 0.1 random(3001 + 4j), running mean
    0.1 random(3002 + 4j), running variance 1 + 0.5 random(3003 + 4j) (seeded_batch_norm in
    tests/common/mod.rs). fc keeps torchvision's initialisation: crosspool does not run it."""
    sd = {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
    f32 = np.float32
    for j, (conv, bn, _) in enumerate(resnet_convs(model)):
        w = model.get_submodule(conv).weight
        fan_in = int(np.prod(w.shape[1:]))
        sd[f"{conv}.weight"] = torch.from_numpy((random(w.numel(), 1000 + 2 * j) * f32(np.sqrt(2.0 / fan_in))).reshape(w.shape))
        c = w.shape[0]
        sd[f"{bn}.weight"] = torch.from_numpy(f32(0.5) + f32(0.25) * random(c, 3000 + 4 * j))
        sd[f"{bn}.bias"] = torch.from_numpy(f32(0.0) + f32(0.1) * random(c, 3001 + 4 * j))
        sd[f"{bn}.running_mean"] = torch.from_numpy(f32(0.0) + f32(0.1) * random(c, 3002 + 4 * j))
        sd[f"{bn}.running_var"] = torch.from_numpy(f32(1.0) + f32(0.5) * random(c, 3003 + 4 * j))
        sd[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    return sd


def resnet_forward(model, x):
    """Every crosspool layer's output, stepping through torchvision's modules in their order."""
    acts = {}
    x = model.relu(model.bn1(model.conv1(x)))
    acts["conv1"] = x
    x = model.maxpool(x)
    acts["maxpool"] = x
    for s in range(1, 5):
        for b, block in enumerate(getattr(model, f"layer{s}")):
            p = f"layer{s}.{b}"
            o = block.relu(block.bn1(block.conv1(x)))
            acts[f"{p}.conv1"] = o
            o = block.relu(block.bn2(block.conv2(o)))
            acts[f"{p}.conv2"] = o
            shortcut = x
            if block.downsample is not None:
                shortcut = block.downsample(x)
                acts[f"{p}.downsample"] = shortcut
            x = block.relu(block.bn3(block.conv3(o)) + shortcut)
            acts[p] = x
    return acts, x


def golden_resnet(arch, size, batch, keep, out_dir):
    model = getattr(torchvision.models, arch)(weights=None)
    model.load_state_dict(seeded_resnet_state_dict(model))
    model = model.double().eval()
    x = random(batch * size * size * 3, 7).reshape(batch, size, size, 3)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
        acts, last = resnet_forward(model, t)
        # The stepping is torchvision's own forward up to layer4 (all but avgpool and fc).
        trunk = torch.nn.Sequential(*list(model.children())[:-2])
        assert torch.equal(trunk(t), last)
    missing = set(keep) - set(acts)
    assert not missing, missing
    tensors = {"input": np.ascontiguousarray(x)}
    for n in keep:
        tensors[n] = np.ascontiguousarray(acts[n].numpy().transpose(0, 2, 3, 1).astype(np.float32))
    save(tensors, (arch, size, batch), "seeded_resnet_state_dict", out_dir)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden")
    ap.add_argument("--only", default="", help="comma-separated networks to write (default: all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    wanted = lambda arch: not only or arch in only  # noqa: E731
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if wanted("vgg16"):
        golden("vgg16", 32, 2, ["conv1_2", "pool1", "conv3_3", "conv5_2", "conv5_3", "pool5"], args.out)
    # At 112 the maps (56, 28, 14, 7) put VGG16's conv2_2 and conv3 on both sides of the CPU
    # backend's mixed Winograd rule (F(4x4) from 128 channels on maps of 28 or more).
    if wanted("vgg16"):
        golden("vgg16", 112, 1, ["conv3_3", "conv4_3", "conv5_3"], args.out)
    if wanted("vgg19"):
        golden("vgg19", 32, 1, ["conv5_3", "conv5_4"], args.out)
    if wanted("alexnet"):
        golden("alexnet", 67, 2, ["conv1", "pool1", "conv2", "conv4", "conv5", "pool5"], args.out)
    # At the native 224 pool5 is 6x6, torchvision's adaptive pooling is the identity, and
    # the classifier equals crosspool's fully connected layers run as convolutions.
    if wanted("alexnet"):
        golden("alexnet", 224, 1, ["conv5", "pool5", "fc6", "fc7", "fc8"], args.out)
    # ResNet-50 at 40x40: every block output, the stem and its pool, and inner layers of
    # each kind (1x1, strided 3x3, the downsampling shortcut); maps of 20, 10, 5, 3 and 2
    # pixels a side, odd ones included. ResNet-101's deep third stage at 32x32.
    blocks50 = [f"layer{s}.{b}" for s, n in enumerate([3, 4, 6, 3], 1) for b in range(n)]
    if wanted("resnet50"):
        golden_resnet("resnet50", 40, 1, ["conv1", "maxpool", "layer1.0.conv1", "layer1.0.downsample",
                                      "layer2.0.conv2", "layer2.0.downsample", "layer4.2.conv2"] + blocks50, args.out)
    if wanted("resnet101"):
        golden_resnet("resnet101", 32, 1, ["layer3.0", "layer3.22", "layer4.0", "layer4.1", "layer4.2"], args.out)


if __name__ == "__main__":
    main()
