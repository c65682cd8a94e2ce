"""crosspool.spark in a local-mode Spark session (2 cores, the CPU backend): features of files
read by Spark equal `crosspool extract`'s bit for bit, and every input is exactly one row."""

import os
import shutil
import sys

import numpy as np
import pytest
from pyspark.sql import SparkSession

import crosspool
import crosspool.spark
from test_crosspool import PHOTOS, SIZE, WEIGHTS, bits, cli


@pytest.fixture(scope="module")
def spark():
    # The workers run this interpreter, the one crosspool is installed in.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (SparkSession.builder.master("local[2]")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
               .getOrCreate())
    yield session
    session.stop()


@pytest.mark.parametrize("fmt", ["f32", "sign2"])
def test_binary_files_give_extracts_features_one_row_per_input(spark, tmp_path, fmt):
    images = tmp_path / "images"
    images.mkdir()
    for p in PHOTOS.glob("*.jpg"):
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    files = sorted(images.iterdir())
    out = tmp_path / "cli"
    p = cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--weights", WEIGHTS,
            "--format", fmt, "-o", out, *files)
    assert p.returncode == 2, p.stderr
    want = crosspool.read_shards(out)
    by_name = dict(zip(want.names, range(len(want.names))))

    df = spark.read.format("binaryFile").load(str(images))
    extract = crosspool.spark.Extract(WEIGHTS, size=int(SIZE), device="cpu", format=fmt)
    rows = df.mapInPandas(extract, schema=extract.schema(df.schema)).collect()

    paths = [crosspool.spark._item(r["path"]) for r in rows]
    assert sorted(paths) == sorted(str(f) for f in files)
    assert all("content" not in r and r["length"] > 0 for r in rows)
    for r, path in zip(rows, paths):
        if path.endswith("broken.jpg"):
            assert r["status"] == "failed" and r["reason"] == want.failures[0]["reason"]
            assert r["features"] is None
            continue
        assert r["status"] == "ok" and r["reason"] == "", r["reason"]
        j = by_name[path]
        stored = want.features[j].reshape(-1)
        got = np.array(r["features"], dtype=stored.dtype)
        assert np.array_equal(bits(got), bits(stored)), path
        assert np.array_equal(bits(np.array(r["guide_mean"], np.float32)), bits(want.guide_mean[j]))


def test_no_image_column_is_an_error_that_names_the_columns(spark):
    df = spark.createDataFrame([("a",)], ["text"])
    with pytest.raises(ValueError, match="pass column"):
        crosspool.spark.Extract(WEIGHTS).schema(df.schema)
