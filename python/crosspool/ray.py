"""crosspool on Ray Data: one :class:`~crosspool.Extractor` per actor of ``map_batches``.

    import ray
    import crosspool.ray

    ds = ray.data.read_binary_files("/data/images", include_paths=True)
    feats = ds.map_batches(
        crosspool.ray.Extract,
        fn_constructor_kwargs={"weights": "vgg16.safetensors", "size": 224, "device": "gpu"},
        concurrency=4, num_gpus=1, batch_size=64, batch_format="numpy",
    )
    feats.write_parquet("/data/features")

Ray is imported by Ray, not by this module: it holds only the callable class, so that it
loads wherever the package does.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["Extract", "IMAGE_COLUMNS"]

#: The columns :class:`Extract` takes images from, in this order of preference:
#: ``bytes`` (an image file's bytes: ``read_binary_files``, ``read_webdataset``),
#: ``image`` (HxWx3 uint8 arrays: ``read_images``) and ``path`` (files the actor can read).
IMAGE_COLUMNS = ("bytes", "image", "path")


class Extract:
    """A ``map_batches`` callable class: features of a batch's images.

    Built from :class:`~crosspool.Extractor`'s arguments (``weights``, ``size``, ``layers``,
    ``pca``, ``format``, ``device``, ...), once per actor: the network is loaded onto the
    actor's device once. ``column`` names the image column (default: the first of
    :data:`IMAGE_COLUMNS` the batch has).

    Returns the batch's other columns unchanged (the image column is left out, except a
    ``path`` column, which names the rows) plus ``features`` (``[n, rows, cols]``, zeros for an
    image that could not be read), ``guide_mean`` (``[n, rows]``, for cross-layer features),
    ``status`` (``"ok"`` or ``"failed"``) and ``reason`` (why it failed, else ``""``): every
    input is exactly one row, and a bad image never fails the task.
    """

    def __init__(self, weights: "os.PathLike[str] | str", *, column: Optional[str] = None,
                 **extractor: Any) -> None:
        from . import Extractor

        self.column = column
        self.extractor = Extractor(weights, **extractor)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        column = self.column or next((c for c in IMAGE_COLUMNS if c in batch), None)
        if column is None or column not in batch:
            raise ValueError(
                f"no image column: expected {self.column or ' or '.join(IMAGE_COLUMNS)}, "
                f"the batch has {sorted(batch)} (pass column=...)"
            )
        items = [_item(v) for v in batch[column]]
        n = len(items)
        out = self.extractor.extract(items)
        rows, cols = self.extractor.feature_shape
        features = np.zeros((n, rows, cols), dtype=out.features.dtype)
        features[out.indices] = out.features
        status = np.full(n, "ok", dtype=object)
        reason = np.full(n, "", dtype=object)
        for f in out.failures:
            status[f.index] = "failed"
            reason[f.index] = f.reason
        result = {k: v for k, v in batch.items() if k != column or column == "path"}
        result["features"] = features
        if out.guide_mean is not None:
            guide = np.zeros((n, rows), dtype=np.float32)
            guide[out.indices] = out.guide_mean
            result["guide_mean"] = guide
        result["status"] = status
        result["reason"] = reason
        return result


def _item(value: Any) -> Any:
    """A batch value as an :meth:`Extractor.extract` item: bytes, an RGB array or a path."""
    if isinstance(value, (bytes, bytearray)):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, np.ndarray):
        # A bytes column may come as a 1-D uint8 array; images are HxWx3.
        if value.dtype == np.uint8 and value.ndim == 1:
            return value.tobytes()
        return value
    return os.fspath(value)
