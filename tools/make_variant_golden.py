#!/usr/bin/env python3
"""Writes tests/golden/variants_alexnet_287.safetensors: the paper's pooling variants
(section 4.3 and Table 5 of the journal version) computed independently of crosspool, from
the paper's definitions, on torchvision's AlexNet with the seeded weights of make_golden.py
(classifier included), in float64.

At 287x287 AlexNet's pool5 is 8x8, so fc6, fc7 and fc8 run as dense convolutions (the
paper's reading of fully connected layers) give a 3x3 grid of activations. The variants:

- FC-FC: local features fc6 (4,096), reduced by a PCA (a seeded projection here, 64
  dimensions, so that the test needs no fit: see seeded_pca), pooled with fc8 (1,000 channels, no ReLU):
  P_k = sum_i fc8_ik * C (fc6_i - mean), 1000 x 64.
- FC-Conv: conv5 summed within each fc6 unit's receptive field (the conv5 units that the
  pool5 units under fc6's 6x6 kernel read), square-rooted, crossed with fc6 at that unit:
  P_k = sum_i fc6_ik * sqrt(sum_{j in field(i)} conv5_j), 4096 x 256.
- Max channel pooling: conv4 x conv5 with P_k = max_i conv5_ik * conv4_i (element-wise),
  256 x 256 (torchvision's conv4 has 256 channels).

FC-Conv and max pooling are normalised as the paper does for classification (L2 per row,
signed square root). FC-FC is stored raw: fc8 has no ReLU, so a channel whose activations
nearly cancel gives a row known only to f32's absolute accuracy, which L2 per row would scale
up to the size of every other row; raw, the feature is held to a normwise bound as a whole
(the normalisation is tested on its own). Only every STRIDE-th row is stored, to keep the file small; rows are independent of each
other under that normalisation, so the stored rows are exactly those of the full feature.

It also writes tests/golden/variants_vgg16_256.safetensors: FC-Conv with the layers the
paper names for VGG16 (conv5_3 x fc6), one image at 256x256.

Needs torch, torchvision, numpy and safetensors (CPU is enough):
    python3 tools/make_variant_golden.py --out tests/golden
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.numpy import save_file

from make_golden import random, seeded_state_dict

SIZE, BATCH, PCA_DIMS = 287, 2, 64
STRIDES = {"fc_fc": 16, "fc_conv": 128, "max_conv4_conv5": 8}


def seeded_pca(feat, dims):
    """The projection tests/variants.rs builds: mean |random(61)| / 100, components
    |random(62)| / 64, row-major [dims][feat]. Non-negative components and a small mean keep
    the projection of the (non-negative) fc6 activations free of cancellation, so that f32
    results can be held to a normwise bound; the conditioning of a real, centred PCA is
    tested with the PCA itself (tests/features.rs)."""
    mean = np.abs(random(feat, 61).astype(np.float64)) / 100.0
    comp = np.abs(random(dims * feat, 62).astype(np.float64)).reshape(dims, feat) / 64.0
    return mean, comp


def paper_norm(p):
    """L2 per row (pooling channel), then signed square root."""
    n = np.sqrt((p * p).sum(axis=-1, keepdims=True))
    p = np.where(n > 0, p / np.where(n > 0, n, 1), p)
    return np.sign(p) * np.sqrt(np.abs(p))


def field_rows(o, pool, fc_kernel):
    """conv5 rows under fc6 unit o: fc6 reads pool5 rows o .. o + k - 1, pool5 row q reads
    conv5 rows q*s - p .. q*s - p + kp - 1. The union, as a set."""
    kp, s, p = pool.kernel_size, pool.stride, pool.padding
    return sorted({q * s - p + i for q in range(o, o + fc_kernel) for i in range(kp)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = torchvision.models.alexnet(weights=None)
    model.load_state_dict(seeded_state_dict(model))
    model = model.double().eval()
    f = model.features
    x = random(BATCH * SIZE * SIZE * 3, 7).reshape(BATCH, SIZE, SIZE, 3)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
        conv4 = f[:10](t)    # after conv4's ReLU (features.9)
        conv5 = f[10:12](conv4)
        pool5 = f[12](conv5)
        lin = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
        # Fully connected layers as convolutions: fc6's kernel covers 6x6 of pool5.
        w6 = lin[0].weight.reshape(4096, 256, 6, 6)
        fc6 = F.relu(F.conv2d(pool5, w6, lin[0].bias))
        fc7 = F.relu(F.conv2d(fc6, lin[1].weight[:, :, None, None], lin[1].bias))
        fc8 = F.conv2d(fc7, lin[2].weight[:, :, None, None], lin[2].bias)
    # NCHW -> [n][units][channels]
    units = lambda a: a.numpy().transpose(0, 2, 3, 1).reshape(a.shape[0], -1, a.shape[1])
    c4, c5, f6, f8 = units(conv4), units(conv5), units(fc6), units(fc8)
    gh, gw = fc6.shape[2], fc6.shape[3]
    assert (gh, gw) == (3, 3), (gh, gw)

    mean, comp = seeded_pca(4096, PCA_DIMS)
    fc_fc = np.stack([f8[n].T @ ((f6[n] - mean) @ comp.T) for n in range(BATCH)])

    h5, w5 = conv5.shape[2], conv5.shape[3]
    c5map = conv5.numpy().transpose(0, 2, 3, 1)
    local = np.zeros((BATCH, gh * gw, 256))
    for y in range(gh):
        for xx in range(gw):
            rows = [r for r in field_rows(y, f[12], 6) if 0 <= r < h5]
            cols = [c for c in field_rows(xx, f[12], 6) if 0 <= c < w5]
            s = c5map[:, rows][:, :, cols].sum(axis=(1, 2))
            local[:, y * gw + xx] = np.sign(s) * np.sqrt(np.abs(s))
    fc_conv = np.stack([f6[n].T @ local[n] for n in range(BATCH)])

    mx = np.stack([(c5[n][:, :, None] * c4[n][:, None, :]).max(axis=0) for n in range(BATCH)])

    tensors, meta = {}, {
        "arch": "alexnet", "size": str(SIZE), "batch": str(BATCH), "pca_dims": str(PCA_DIMS),
        "dtype": "float64, stored f32",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "weights": "tools/make_golden.py seeded_state_dict",
    }
    for name, p, norm in [("fc_fc", fc_fc, "none"), ("fc_conv", fc_conv, "paper"),
                          ("max_conv4_conv5", mx, "paper")]:
        stride = STRIDES[name]
        p = paper_norm(p) if norm == "paper" else p
        tensors[name] = np.ascontiguousarray(p[:, ::stride].astype(np.float32))
        meta[f"{name}.norm"] = norm
        meta[f"{name}.row_stride"] = str(stride)
        meta[f"{name}.rows"] = str(p.shape[1])
    path = os.path.join(args.out, f"variants_alexnet_{SIZE}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(path, {k: v.shape for k, v in tensors.items()})
    vgg16_fc_conv(args.out)


def vgg16_fc_conv(out_dir, size=256, stride=128):
    """FC-Conv as the paper names it for VGG16: conv5_3 x fc6, one image at 256x256 (conv5_3
    16x16, pool5 8x8, fc6 on a 2x2 grid), 4096 x 512, paper normalisation, every 128th row."""
    model = torchvision.models.vgg16(weights=None)
    model.load_state_dict(seeded_state_dict(model))
    model = model.double().eval()
    f = model.features
    x = random(size * size * 3, 7).reshape(1, size, size, 3)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
        conv5_3 = f[:30](t)  # after conv5_3's ReLU (features.29)
        pool5 = f[30](conv5_3)
        lin = model.classifier[0]
        fc6 = F.relu(F.conv2d(pool5, lin.weight.reshape(4096, 512, 7, 7), lin.bias))
    gh, gw = fc6.shape[2], fc6.shape[3]
    assert (gh, gw) == (2, 2), (gh, gw)
    c = conv5_3.numpy().transpose(0, 2, 3, 1)[0]
    local = np.zeros((gh * gw, 512))
    for y in range(gh):
        for xx in range(gw):
            rows = [r for r in field_rows(y, f[30], 7) if 0 <= r < c.shape[0]]
            cols = [q for q in field_rows(xx, f[30], 7) if 0 <= q < c.shape[1]]
            s = c[rows][:, cols].sum(axis=(0, 1))
            local[y * gw + xx] = np.sign(s) * np.sqrt(np.abs(s))
    f6 = fc6.numpy().transpose(0, 2, 3, 1).reshape(gh * gw, 4096)
    p = paper_norm(f6.T @ local)[None]
    meta = {
        "arch": "vgg16", "size": str(size), "batch": "1", "dtype": "float64, stored f32",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "weights": "tools/make_golden.py seeded_state_dict",
        "fc_conv.row_stride": str(stride), "fc_conv.rows": str(p.shape[1]),
        "fc_conv.norm": "paper",
    }
    tensors = {"fc_conv": np.ascontiguousarray(p[:, ::stride].astype(np.float32))}
    path = os.path.join(out_dir, f"variants_vgg16_{size}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(path, {k: v.shape for k, v in tensors.items()})


if __name__ == "__main__":
    main()
