"""crosspool on Spark: one :class:`~crosspool.Extractor` per Python worker, behind
``DataFrame.mapInPandas``.

    from pyspark.sql import SparkSession
    import crosspool.spark

    spark = SparkSession.builder.getOrCreate()
    df = spark.read.format("binaryFile").load("/data/images/*.jpg")
    extract = crosspool.spark.Extract("vgg16.safetensors", size=224, device="gpu")
    feats = df.mapInPandas(extract, schema=extract.schema(df.schema))
    feats.write.parquet("/data/features.parquet")

Spark and pandas are imported by Spark's workers, not by this module, so that it loads
wherever the package does; :meth:`Extract.schema` imports pyspark's types.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Optional, Sequence
from urllib.parse import unquote, urlparse

import numpy as np

__all__ = ["Extract", "IMAGE_COLUMNS"]

#: The columns :class:`Extract` takes images from, in this order of preference: ``content``
#: (an image file's bytes, as ``spark.read.format("binaryFile")`` gives), ``bytes``, and
#: ``path`` (files the workers can read; ``file:`` URLs included).
IMAGE_COLUMNS = ("content", "bytes", "path")

#: Extractors of this Python worker process, by their arguments: Spark reuses a worker for
#: many partitions, and the network is loaded once per worker.
_EXTRACTORS: Dict[str, Any] = {}


class Extract:
    """A ``mapInPandas`` function: features of each partition's images.

    Built from :class:`~crosspool.Extractor`'s arguments (``weights``, ``size``, ``layers``,
    ``pca``, ``format``, ``device``, ...); it is pickled to the workers, and each worker
    process loads the network once, on first use. ``column`` names the image column
    (default: the first of :data:`IMAGE_COLUMNS` the frame has).

    Yields the frame's other columns unchanged (the image column is left out, except a
    ``path`` column, which names the rows) plus ``features`` (the feature flattened row by
    row, ``rows * cols`` values: floats for ``f32`` and ``f16``, the 32-bit words of packed
    codes as longs; null for an image that could not be read), ``guide_mean`` (``rows``
    floats for cross-layer features, else null), ``status`` (``"ok"`` or ``"failed"``),
    ``reason`` (why it failed, else ``""``) and ``settings`` (how the features were computed,
    as :attr:`~crosspool.Extractor.settings`; ``feature_rows`` and ``feature_cols`` give the
    shape). Every input is exactly one row, and a bad image never fails the task.
    """

    def __init__(self, weights: "os.PathLike[str] | str", *, column: Optional[str] = None,
                 **extractor: Any) -> None:
        self.weights = os.fspath(weights)
        self.column = column
        self.extractor_args = extractor

    def schema(self, input_schema: Any) -> Any:
        """The output's schema (a ``StructType``) for input of ``input_schema``."""
        from pyspark.sql.types import (ArrayType, FloatType, LongType, StringType,
                                       StructField, StructType)

        column = self._column(input_schema.fieldNames())
        codes = self.extractor_args.get("format", "f32") in ("sign2", "bits1")
        fields = [f for f in input_schema.fields if f.name != column or column == "path"]
        fields += [
            StructField("features", ArrayType(LongType() if codes else FloatType(), False)),
            StructField("guide_mean", ArrayType(FloatType(), False)),
            StructField("status", StringType(), False),
            StructField("reason", StringType(), False),
            StructField("settings", StringType(), False),
        ]
        return StructType(fields)

    def __call__(self, frames: Iterator[Any]) -> Iterator[Any]:
        extractor = self._extractor()
        for frame in frames:
            column = self._column(list(frame.columns))
            out = extractor.extract([_item(v) for v in frame[column]])
            n = len(frame)
            features: list = [None] * n
            guide: list = [None] * n
            flat = out.features.reshape(len(out.indices), -1)
            # Spark has no half or unsigned types: f16 widens to f32 exactly, u32 to i64.
            flat = flat.astype(np.int64 if flat.dtype == np.uint32 else np.float32)
            for j, i in enumerate(out.indices):
                features[i] = flat[j]
                if out.guide_mean is not None:
                    guide[i] = out.guide_mean[j]
            status = ["ok"] * n
            reason = [""] * n
            for f in out.failures:
                status[f.index] = "failed"
                reason[f.index] = f.reason
            result = frame.drop(columns=[column]) if column != "path" else frame.copy()
            result["features"] = features
            result["guide_mean"] = guide
            result["status"] = status
            result["reason"] = reason
            result["settings"] = [extractor.settings] * n
            yield result

    def _extractor(self) -> Any:
        key = repr((self.weights, sorted(self.extractor_args.items())))
        extractor = _EXTRACTORS.get(key)
        if extractor is None:
            from . import Extractor

            extractor = _EXTRACTORS[key] = Extractor(self.weights, **self.extractor_args)
        return extractor

    def _column(self, columns: Sequence[str]) -> str:
        column = self.column or next((c for c in IMAGE_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            raise ValueError(
                f"no image column: expected {self.column or ' or '.join(IMAGE_COLUMNS)}, "
                f"the data has {sorted(columns)} (pass column=...)"
            )
        return column


def _item(value: Any) -> Any:
    """A cell as an :meth:`Extractor.extract` item: bytes, or a path (a ``file:`` URL's)."""
    if isinstance(value, (bytes, bytearray)):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    text = os.fspath(value)
    if text.startswith("file:"):
        return unquote(urlparse(text).path)
    return text
