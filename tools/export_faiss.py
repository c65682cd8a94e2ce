#!/usr/bin/env python3
"""Exports a crosspool index (from `crosspool index`) to a FAISS index, for databases that
outgrow one machine's memory or one GPU (FAISS shards, IVF, on-disk inverted lists).

- 1-bit codes -> faiss.IndexBinaryFlat over all channels' bits. Hamming distance h ranks
  exactly as eq. 3 over all channels (score = rows * cols - 2 h); the paper's query-adaptive
  top-k channel selection is not expressible in FAISS, so use it as a first stage and re-rank
  its shortlist with `crosspool search` semantics (or keep crosspool for k < all).
- 2-bit codes -> faiss.IndexBinaryFlat too: the Hamming distance of two 2-bit codes is the L1
  distance of their {-1, 0, +1} vectors, a related but not identical ranking.
- floats -> faiss.IndexFlatIP: inner products of unit vectors, i.e. cosine (eq. 3, all
  channels).

Row i of the FAISS index is line i of the index's images.jsonl (copied beside the output).
Needs numpy and faiss-cpu (or faiss-gpu).

    python3 tools/export_faiss.py DB --out db.faiss [--check 5]
"""
import argparse
import json
import shutil
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dtypes = {"U32": np.uint32, "F32": np.float32}
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(data[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index", help="directory written by crosspool index")
    ap.add_argument("--out", required=True, help="FAISS index file to write")
    ap.add_argument("--check", type=int, default=0,
                    help="re-rank N of the database's own images with numpy and compare with FAISS")
    args = ap.parse_args()
    import faiss

    tensors, meta = read_safetensors(f"{args.index}/index.safetensors")
    kind = meta["crosspool.index.kind"]
    rows, cols = int(meta["crosspool.index.rows"]), int(meta["crosspool.index.cols"])
    if kind in ("Bits1", "Sign2"):
        codes = np.ascontiguousarray(tensors["codes"])
        n = codes.shape[0]
        # Little-endian u32 words as bytes: the bit order within a byte does not change
        # Hamming distances.
        flat = codes.reshape(n, -1).view(np.uint8)
        index = faiss.IndexBinaryFlat(flat.shape[1] * 8)
        index.add(flat)
        faiss.write_index_binary(index, args.out)
    elif kind == "F32":
        feats = np.ascontiguousarray(tensors["features"].reshape(tensors["features"].shape[0], -1))
        n = feats.shape[0]
        index = faiss.IndexFlatIP(feats.shape[1])
        index.add(feats)
        faiss.write_index(index, args.out)
    else:
        sys.exit(f"unknown index kind {kind}")
    shutil.copyfile(f"{args.index}/images.jsonl", args.out + ".images.jsonl")
    print(f"wrote {args.out}: {n} images, {kind}, {rows} x {cols} per image; paths in {args.out}.images.jsonl")

    if args.check:
        k = min(10, n)
        q = np.arange(min(args.check, n))
        if kind == "F32":
            d, got = index.search(feats[q], k)
            want = np.argsort(-(feats[q] @ feats.T), axis=1, kind="stable")[:, :k]
            scores = feats[q] @ feats.T
        else:
            d, got = index.search(flat[q], k)
            bits = np.unpackbits(flat, axis=1)
            if kind == "Bits1":
                # eq. 3 over all channels on +-1 values (padding bits are 0 in both: no effect)
                pm = bits.astype(np.int64) * 2 - 1
                scores = pm[q] @ pm.T - (bits.shape[1] - rows * cols)
            else:
                # Hamming on 2-bit codes = L1 distance of the sign vectors; negate to rank.
                scores = -(bits[q].astype(np.int64)[:, None, :] != bits[None, :, :]).sum(-1)
            want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        # Ties may be broken differently: compare the scores of the ranked images.
        ok = all(np.array_equal(np.sort(scores[i, got[i]]), np.sort(scores[i, want[i]])) for i in range(len(q)))
        what = 'L1 of the sign vectors' if kind == 'Sign2' else 'eq. 3 over all channels'
        print(f"check: FAISS top-{k} {'matches' if ok else 'DIFFERS FROM'} numpy's {what} for {len(q)} queries")
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()
