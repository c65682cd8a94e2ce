"""crosspool from Python: cross-convolutional-layer pooling features (Liu, Shen, van den
Hengel) computed by the same Rust library as the ``crosspool`` command line, on any GPU wgpu
reaches or on its native CPU backend.

    >>> import crosspool
    >>> ex = crosspool.Extractor("weights/vgg16_hed.safetensors", size=224)
    >>> out = ex.extract(["a.jpg", "b.png", rgb_array])
    >>> out.features.shape          # [images read, rows, cols]
    >>> out.failures                # [Failure(index, item, reason)] for the others

Errors raise :class:`CrosspoolError` with the message the command line prints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np

from . import _crosspool
from ._crosspool import CrosspoolError

__all__ = [
    "CrosspoolError",
    "Extraction",
    "Extractor",
    "Failure",
    "Index",
    "Shards",
    "read_shards",
]


@dataclass(frozen=True)
class Failure:
    """An item that has no feature: its position in the list given, its name, and why."""

    index: int
    item: str
    reason: str


@dataclass
class Extraction:
    """What :meth:`Extractor.extract` computed.

    ``features`` is ``[n, rows, cols]`` for the ``n`` items that were read, in input order
    (float32, float16, or uint32 words of packed sign codes, as the extractor's ``format``);
    ``indices[j]`` is the position in the input list of ``features[j]``; ``guide_mean`` holds
    each one's layer t+1 channel means ``[n, rows]`` for cross-layer features (the query's
    channel selection in retrieval), else ``None``; ``failures`` lists every other item.
    """

    features: np.ndarray
    guide_mean: Optional[np.ndarray]
    indices: List[int]
    failures: List[Failure]

    def __len__(self) -> int:
        return len(self.indices)


def _progress_callback(progress: Any) -> Optional[Callable[[int, int], None]]:
    """``progress`` as ``f(done, total)``: a callable as it is, or a tqdm-like bar (anything
    with ``update(n)``), advanced by the images done since the last call."""
    if progress is None:
        return None
    if hasattr(progress, "update"):
        last = [0]

        def advance(done: int, total: int) -> None:
            if getattr(progress, "total", None) is None:
                progress.total = total
            progress.update(done - last[0])
            last[0] = done

        return advance
    if callable(progress):
        return progress
    raise TypeError("progress must be a callable f(done, total) or have update(n), like tqdm")


class Extractor:
    """Computes features with one network and one set of settings, on one device.

    The arguments are ``crosspool extract``'s flags: ``weights`` (a safetensors file),
    ``layers`` (e.g. ``["conv5_2", "conv5_3"]``; default the paper's pair), ``size``,
    ``pca`` (a file from ``crosspool fit-pca``), ``norm`` (``paper``, ``retrieval``, ...),
    ``format`` (``f32``, ``f16``, ``sign2``, ``bits1``), ``batch`` (default from the
    device), ``device`` (``auto``, ``gpu``, ``cpu``), and ``model``, ``pooling``,
    ``channel_pooling``, ``levels``, ``window``, ``decode``, ``adapter``, ``backend``,
    ``in_flight`` (batches in flight on a GPU, default 2), ``precision`` (``f32``, ``f16``:
    f16 storage on a GPU with shader-f16, an item whose activations overflow f16 failing;
    ``auto``). The
    network's weights are loaded onto the device once; :meth:`extract` can be called many
    times.
    """

    def __init__(
        self,
        weights: "os.PathLike[str] | str",
        *,
        layers: Optional[Sequence[str]] = None,
        size: int = 224,
        pca: "os.PathLike[str] | str | None" = None,
        norm: str = "paper",
        format: str = "f32",
        batch: Optional[int] = None,
        device: str = "auto",
        model: Optional[str] = None,
        pooling: str = "cross-layer",
        channel_pooling: str = "sum",
        levels: int = 0,
        window: str = "1x1",
        decode: str = "fast",
        adapter: Optional[str] = None,
        backend: Optional[str] = None,
        in_flight: Optional[int] = None,
        precision: str = "f32",
    ) -> None:
        self._ex = _crosspool.Extractor(
            os.fspath(weights),
            model=model,
            layers=list(layers) if layers is not None else None,
            pooling=pooling,
            channel_pooling=channel_pooling,
            levels=levels,
            window=window,
            size=size,
            decode=decode,
            pca=os.fspath(pca) if pca is not None else None,
            norm=norm,
            format=format,
            batch=batch,
            device=device,
            adapter=adapter,
            backend=backend,
            in_flight=in_flight,
            precision=precision,
        )

    @property
    def device(self) -> str:
        """The device in words."""
        return self._ex.device

    @property
    def feature_shape(self) -> tuple:
        """``(rows, cols)`` of each feature (cols in 32-bit words for sign codes)."""
        return self._ex.feature_shape

    @property
    def batch(self) -> int:
        """Images per batch."""
        return self._ex.batch

    @property
    def format(self) -> str:
        """The format of the features: ``f32``, ``f16``, ``sign2`` or ``bits1``."""
        return self._ex.format

    @property
    def settings(self) -> str:
        """How the features are computed and stored, as JSON: the record ``crosspool extract``
        writes as ``extract.json`` (network, weights by path and content, layers, pooling,
        size, format, ...). Features with equal settings can be compared and indexed
        together."""
        return self._ex.settings

    def extract(self, items: Iterable[Any], progress: Any = None) -> Extraction:
        """Features of ``items``: image paths (str or path-like) and HxWx3 uint8 RGB arrays
        (upright, resized as a decoded file is). An item that cannot be read becomes a
        :class:`Failure`; the others are unaffected. The work runs with the GIL released;
        ``progress`` is ``f(done, total)`` or a tqdm bar, called after each batch."""
        items = list(items)
        features, guide, indices, failures = self._ex.extract(
            items, _progress_callback(progress)
        )
        return Extraction(
            features=features,
            guide_mean=guide,
            indices=list(indices),
            failures=[Failure(*f) for f in failures],
        )


@dataclass
class Shards:
    """The features of an ``extract`` output directory (every part, in part order).

    ``features[j]`` is the ``j``-th image that has one; ``rows`` holds every manifest line
    (images with features and failed ones, in order) as a dict with ``name`` and, for those
    with a feature, ``index`` into ``features``. One shard is memory-mapped; several are
    joined into one array.
    """

    features: np.ndarray
    guide_mean: Optional[np.ndarray]
    rows: List[dict]

    @property
    def names(self) -> List[str]:
        """The name of each feature's image, in feature order."""
        return [r["name"] for r in self.rows if "index" in r]

    @property
    def failures(self) -> List[dict]:
        """The manifest lines of images without a feature."""
        return [r for r in self.rows if r.get("status") == "failed"]


def read_shards(directory: "os.PathLike[str] | str") -> Shards:
    """Reads an ``extract`` output directory (see :class:`Shards`)."""
    layout = _crosspool.shard_layout(os.fspath(directory))
    features, guides, rows = [], [], []
    base = 0
    for path, tensors, lines in layout:
        by_name = {
            name: np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
            for name, dtype, shape, offset in tensors
        }
        f = by_name.get("features", by_name.get("codes"))
        if f is None:
            raise CrosspoolError(f"{path} holds no features")
        features.append(f)
        # A shard of failed images has no rows, and so says nothing about guide means.
        if f.shape[0] > 0:
            guides.append(by_name.get("guide_mean"))
        for line in lines:
            row = json.loads(line)
            if row.get("status") == "ok":
                row["index"] = base + row["row"]
            rows.append(row)
        base += f.shape[0]
    guide = None
    if guides and all(g is not None for g in guides):
        guide = guides[0] if len(guides) == 1 else np.concatenate(guides)
    feats = features[0] if len(features) == 1 else np.concatenate(features)
    return Shards(features=feats, guide_mean=guide, rows=rows)


class Index:
    """A retrieval index directory (from ``crosspool index``), searched with the paper's
    eq. 3 on the GPU's scoring kernel or the CPU's cores (``device``)."""

    def __init__(self, path: "os.PathLike[str] | str", *, device: str = "auto") -> None:
        self._ix = _crosspool.Index(os.fspath(path), device=device)

    def __len__(self) -> int:
        return len(self._ix)

    @property
    def names(self) -> List[str]:
        """Each indexed image's name, in index order."""
        return self._ix.names

    @property
    def device(self) -> str:
        """The device in words."""
        return self._ix.device

    def search(
        self, query: Extraction, *, top: int = 10, channels: Optional[int] = None
    ) -> List[List[tuple]]:
        """The ``top`` images for each query feature, best first, as ``(name, score)``.

        ``query`` is an :class:`Extraction` from an :class:`Extractor` with the settings the
        index's features were extracted with, in ``f32``. ``channels``: the pooling
        channels compared (default 50 for cross-layer indexes, ``0`` for all)."""
        features = np.ascontiguousarray(query.features, dtype=np.float32)
        guide = query.guide_mean
        if guide is not None:
            guide = np.ascontiguousarray(guide, dtype=np.float32)
        names = self._ix.names
        hits = self._ix.search(features, guide, top=top, channels=channels)
        return [[(names[i], s) for i, s in q] for q in hits]

    def eval(
        self, ground_truth: "os.PathLike[str] | str", *, channels: Optional[int] = None
    ) -> dict:
        """mAP and recall@1 against a ground-truth file, as ``crosspool eval`` computes them:
        ``{"map", "recall_at_1", "channels", "seconds", "per_query"}``."""
        return self._ix.eval(os.fspath(ground_truth), channels=channels)
