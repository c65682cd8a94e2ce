"""crosspool on Ray Data: one :class:`~crosspool.Extractor` per actor of ``map_batches``.

    import ray
    import crosspool.ray

    ds = ray.data.read_binary_files("/data/images", include_paths=True)
    feats = ds.map_batches(
        crosspool.ray.Extract,
        fn_constructor_kwargs={"weights": "vgg16.safetensors", "size": 224, "device": "gpu"},
        concurrency=4, num_gpus=1, batch_size=64, batch_format="numpy",
    )
    crosspool.ray.write_shards(feats, "/data/features")   # what `crosspool extract` writes
    # or: feats.write_parquet("/data/features.parquet")

Ray is imported by Ray, not by this module: it holds only the callable class and a writer
that takes any dataset, so that it loads wherever the package does.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["Extract", "IMAGE_COLUMNS", "NAME_COLUMNS", "write_shards"]

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
    ``status`` (``"ok"`` or ``"failed"``), ``reason`` (why it failed, else ``""``) and
    ``settings`` (the extractor's :attr:`~crosspool.Extractor.settings`, so that the rows say
    how they were computed and :func:`write_shards` can refuse to mix two kinds): every input
    is exactly one row, and a bad image never fails the task.
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
        result["settings"] = np.full(n, self.extractor.settings, dtype=object)
        return result


#: The columns :func:`write_shards` names rows by, in this order of preference: ``path``
#: (``read_binary_files(..., include_paths=True)``, ``read_images``) and ``__key__``
#: (``read_webdataset``'s sample key).
NAME_COLUMNS = ("path", "__key__")

#: The columns of :class:`Extract`'s output that :func:`write_shards` needs.
_NEEDED = ("features", "status", "reason", "settings")


def write_shards(
    ds: Any,
    out: "os.PathLike[str] | str",
    *,
    shard_rows: int = 1000,
    part: Optional[Tuple[int, int]] = None,
    name_column: Optional[str] = None,
    label_column: Optional[str] = None,
) -> Dict[str, int]:
    """Writes the rows of a dataset mapped with :class:`Extract` into ``out`` as
    ``crosspool extract`` does: shards of ``shard_rows`` images, a manifest line per row
    (failed rows with their reason) and the settings record, so that ``crosspool index``,
    ``train-classifier``, ``export`` and :func:`crosspool.read_shards` read them.

    Rows are named by ``name_column`` (default: the first of :data:`NAME_COLUMNS` present)
    and labelled by ``label_column`` (for ``train-classifier``). ``part`` ``(i, n)`` writes
    part ``i`` of an ``n``-way split, as ``extract --shard i/n`` does, so that ``n`` drivers
    can fill one directory. Rows computed with other settings than the first row's are
    refused, as is a directory that already holds shards of this part.

    The rows stream through this process (the driver), one batch at a time; returns
    ``{"ok": images with features, "failed": images without, "shards": files written}``.
    """
    from ._crosspool import ShardWriter

    if shard_rows < 1:
        raise ValueError("shard_rows must be at least 1")
    writer = None
    checked = set()
    for batch in ds.iter_batches(batch_format="numpy", batch_size=min(shard_rows, 256)):
        missing = [c for c in _NEEDED if c not in batch]
        if missing:
            raise ValueError(
                f"the dataset lacks the column(s) {missing} that crosspool.ray.Extract adds; "
                f"it has {sorted(batch)}"
            )
        names_from = name_column or next((c for c in NAME_COLUMNS if c in batch), None)
        if names_from is None or names_from not in batch:
            raise ValueError(
                f"no column names the rows: expected {name_column or ' or '.join(NAME_COLUMNS)}, "
                f"the dataset has {sorted(batch)} (pass name_column=...)"
            )
        if label_column is not None and label_column not in batch:
            raise ValueError(f"no label column {label_column!r}: the dataset has {sorted(batch)}")
        settings = batch["settings"]
        if writer is None:
            writer = ShardWriter(os.fspath(out), str(settings[0]), shard_rows=shard_rows, part=part)
        for s in set(settings) - checked:
            writer.check_settings(str(s))
            checked.add(s)
        features = batch["features"]
        # f16 features widen to f32 exactly, and are stored as f16 again.
        if features.dtype == np.float16:
            features = features.astype(np.float32)
        guide = batch.get("guide_mean")
        reasons = [
            None if status == "ok" else str(reason)
            for status, reason in zip(batch["status"], batch["reason"])
        ]
        labels = None
        if label_column is not None:
            labels = [None if v is None else _text(v) for v in batch[label_column]]
        writer.push(
            [_text(v) for v in batch[names_from]],
            np.ascontiguousarray(features),
            reasons,
            None if guide is None else np.ascontiguousarray(guide, dtype=np.float32),
            labels,
        )
    if writer is None:
        raise ValueError(f"the dataset has no rows: nothing written to {os.fspath(out)}")
    ok, failed, shards = writer.finish()
    return {"ok": ok, "failed": failed, "shards": shards}


def _text(value: Any) -> str:
    """A name or label cell as text (bytes as UTF-8, numbers as written)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


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
