"""crosspool.ray on a local Ray cluster (2 CPUs, the CPU backend): features of files read by
Ray Data equal `crosspool extract`'s bit for bit, and every input is exactly one row."""

import os

import numpy as np
import pytest
import ray

import crosspool
import crosspool.ray
from test_crosspool import PHOTOS, SIZE, WEIGHTS, bits, cli


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_read_binary_files_one_row_per_input(cluster, tmp_path):
    files = sorted(PHOTOS.glob("*.jpg"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    files += [tmp_path / "empty.jpg", tmp_path / "broken.jpg"]
    out = tmp_path / "cli"
    p = cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--weights", WEIGHTS, "-o", out, *files)
    assert p.returncode == 2, p.stderr
    shards = crosspool.read_shards(out)
    want = dict(zip(shards.names, shards.features))
    failed = {r["path"]: r["reason"] for r in shards.failures}

    ds = ray.data.read_binary_files([str(f) for f in files], include_paths=True)
    rows = ds.map_batches(
        crosspool.ray.Extract,
        fn_constructor_kwargs={"weights": str(WEIGHTS), "size": int(SIZE), "device": "cpu", "batch": 2},
        concurrency=1, batch_size=3, batch_format="numpy",
    ).take_all()
    assert sorted(r["path"] for r in rows) == sorted(str(f) for f in files)
    assert all("bytes" not in r for r in rows)
    for r in rows:
        if r["status"] == "ok":
            assert r["reason"] == ""
            assert np.array_equal(bits(r["features"]), bits(want[r["path"]])), r["path"]
            assert r["guide_mean"].shape == (r["features"].shape[0],)
        else:
            assert r["status"] == "failed" and r["reason"], r
            assert r["path"] in failed
            assert not r["features"].any()
    assert sum(r["status"] == "ok" for r in rows) == len(want)


def test_no_image_column_is_an_error_that_names_the_columns():
    ex = crosspool.ray.Extract(WEIGHTS, size=int(SIZE), device="cpu")
    with pytest.raises(ValueError, match="pass column"):
        ex({"text": np.array(["a"])})


def test_read_webdataset_with_the_image_column_named(cluster, tmp_path):
    import tarfile

    photos = sorted(PHOTOS.glob("*.jpg"))
    tar = tmp_path / "shard-000.tar"
    with tarfile.open(tar, "w") as t:
        for p in photos:
            t.add(p, arcname=p.name)
            cls = tmp_path / f"{p.stem}.cls"
            cls.write_text(p.stem)
            t.add(cls, arcname=cls.name)
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8\xff not a jpeg")
        t.add(broken, arcname=broken.name)
    out = tmp_path / "cli"
    p = cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--weights", WEIGHTS, "-o", out, tar)
    assert p.returncode == 2, p.stderr
    shards = crosspool.read_shards(out)
    want = {n.rsplit("/", 1)[-1].rsplit(".", 1)[0]: f for n, f in zip(shards.names, shards.features)}
    assert sorted(want) == sorted(p.stem for p in photos)

    # decoder=None keeps each member's bytes, which crosspool decodes as extract does.
    ds = ray.data.read_webdataset(str(tar), decoder=None)
    rows = ds.map_batches(
        crosspool.ray.Extract,
        fn_constructor_kwargs={"weights": str(WEIGHTS), "size": int(SIZE), "device": "cpu",
                               "column": "jpg"},
        concurrency=1, batch_size=2, batch_format="numpy",
    ).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted([p.stem for p in photos] + ["broken"])
    for r in rows:
        if r["__key__"] == "broken":
            assert r["status"] == "failed" and r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert np.array_equal(bits(r["features"]), bits(want[r["__key__"]])), r["__key__"]
        assert bytes(r["cls"]).decode() == r["__key__"]  # the sample's other fields pass through
        assert "jpg" not in r


def test_a_worker_killed_mid_run_leaves_no_row_missing_or_repeated(cluster, tmp_path):
    files = sorted(PHOTOS.glob("*.jpg")) * 3  # 12 rows in batches of 2
    marker = tmp_path / "killed"

    class DiesOnce(crosspool.ray.Extract):
        """Kills its process on its second batch, once per test: Ray restarts the actor and
        retries the batch."""

        calls = 0

        def __call__(self, batch):
            DiesOnce.calls += 1
            if DiesOnce.calls == 2 and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    ds = ray.data.read_binary_files([str(f) for f in files], include_paths=True)
    rows = ds.map_batches(
        DiesOnce,
        fn_constructor_kwargs={"weights": str(WEIGHTS), "size": int(SIZE), "device": "cpu"},
        concurrency=1, batch_size=2, batch_format="numpy",
        max_restarts=2, max_task_retries=2,
    ).take_all()
    assert marker.exists(), "the worker was not killed"
    assert sorted(r["path"] for r in rows) == sorted(str(f) for f in files)
    assert all(r["status"] == "ok" for r in rows)
    # The same image gives the same features whichever actor computed it.
    by_path = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r["features"])
    for feats in by_path.values():
        assert all(np.array_equal(bits(f), bits(feats[0])) for f in feats)


def extracted_with_ray(files, fmt, **extra):
    """The Ray dataset of `files` mapped with Extract (CPU backend, format `fmt`)."""
    ds = ray.data.read_binary_files([str(f) for f in files], include_paths=True)
    kwargs = {"weights": str(WEIGHTS), "size": int(SIZE), "device": "cpu", "format": fmt, **extra}
    # Half a CPU per actor: two such datasets in one (a union) still leave CPUs to read files.
    return ds.map_batches(crosspool.ray.Extract, fn_constructor_kwargs=kwargs, num_cpus=0.5,
                          concurrency=1, batch_size=3, batch_format="numpy")


@pytest.mark.parametrize("fmt", ["f32", "f16", "sign2"])
def test_write_shards_writes_what_extract_writes(cluster, tmp_path, fmt):
    files = sorted(PHOTOS.glob("*.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    files.append(tmp_path / "broken.jpg")
    out = tmp_path / "cli"
    p = cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--weights", WEIGHTS,
            "--format", fmt, "-o", out, *files)
    assert p.returncode == 2, p.stderr
    want = crosspool.read_shards(out)

    labels = {str(f): ("even" if k % 2 == 0 else "odd") for k, f in enumerate(files)}
    ds = extracted_with_ray(files, fmt).map_batches(
        lambda b: {**b, "label": np.array([labels[p] for p in b["path"]], dtype=object)},
        batch_format="numpy")
    ray_out = tmp_path / "ray"
    counts = crosspool.ray.write_shards(ds, ray_out, shard_rows=2, label_column="label")
    assert counts == {"ok": len(files) - 1, "failed": 1, "shards": 3}

    # The settings record is extract's, field for field.
    import json
    assert json.loads((ray_out / "extract.json").read_text()) == json.loads((out / "extract.json").read_text())
    got = crosspool.read_shards(ray_out)
    assert sorted(got.names) == sorted(want.names)
    mine = dict(zip(got.names, range(len(got.names))))
    for j, name in enumerate(want.names):
        k = mine[name]
        assert np.array_equal(bits(got.features[k]), bits(want.features[j])), name
        if want.guide_mean is not None:
            assert np.array_equal(bits(got.guide_mean[k]), bits(want.guide_mean[j])), name
    assert [r["path"] for r in got.failures] == [str(files[-1])]
    assert got.failures[0]["reason"] == want.failures[0]["reason"]
    assert {r["path"]: r["label"] for r in got.rows} == labels

    if fmt == "f32":
        # Parquet keeps the tensors as they are.
        ds.write_parquet(str(tmp_path / "parquet"))
        back = ray.data.read_parquet(str(tmp_path / "parquet")).take_all()
        assert sorted(r["path"] for r in back) == sorted(str(f) for f in files)
        for r in back:
            if r["status"] == "ok":
                j = want.names.index(r["path"])
                assert np.array_equal(bits(r["features"]), bits(want.features[j])), r["path"]
        # What extract's output feeds, Ray's does: an index, and a classifier from the labels.
        p = cli("index", "-o", tmp_path / "index", ray_out, check=False)
        assert p.returncode == 0, p.stderr
        assert len(crosspool.Index(tmp_path / "index", device="cpu")) == len(files) - 1
        p = cli("train-classifier", "--c", "1", "-o", tmp_path / "clf", ray_out,
                check=False)
        assert p.returncode == 0, p.stderr


def test_write_shards_refuses_to_mix_settings_or_overwrite(cluster, tmp_path):
    files = sorted(PHOTOS.glob("*.jpg"))[:2]
    mixed = extracted_with_ray(files, "f32").union(extracted_with_ray(files, "f32", window="3x3"))
    with pytest.raises(crosspool.CrosspoolError, match="other settings.*window"):
        crosspool.ray.write_shards(mixed, tmp_path / "mixed", shard_rows=1)

    out = tmp_path / "once"
    crosspool.ray.write_shards(extracted_with_ray(files, "f32"), out)
    with pytest.raises(crosspool.CrosspoolError, match="already holds"):
        crosspool.ray.write_shards(extracted_with_ray(files, "f32"), out)
    # Two parts of one split fill one directory, as extract --shard does.
    first = out.parent / "parts"
    for i in range(2):
        crosspool.ray.write_shards(extracted_with_ray(files[i::2], "f32"), first, part=(i, 2))
    assert len(crosspool.read_shards(first).names) == len(files)

    with pytest.raises(ValueError, match="lacks the column"):
        crosspool.ray.write_shards(ray.data.from_items([{"path": "a"}]), tmp_path / "bare")


def test_the_shard_writer_refuses_misshapen_rows_and_bad_parts(tmp_path):
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), device="cpu")
    rows, cols = ex.feature_shape
    with pytest.raises(ValueError, match="part must be"):
        crosspool._crosspool.ShardWriter(str(tmp_path / "p"), ex.settings, part=(2, 2))
    w = crosspool._crosspool.ShardWriter(str(tmp_path / "w"), ex.settings, shard_rows=1)
    assert w.feature_shape == (rows, cols)
    with pytest.raises(ValueError, match=r"features must be \[1, 512, 512\]"):
        w.push(["a"], np.zeros((1, rows, cols - 1), np.float32), [None])
    with pytest.raises(ValueError, match="float32"):
        w.push(["a"], np.zeros((1, rows, cols), np.float64), [None])
    with pytest.raises(ValueError, match="2 reasons for 1 names"):
        w.push(["a"], np.zeros((1, rows, cols), np.float32), [None, None])
    w.push(["a", "b"], np.ones((2, rows, cols), np.float32), [None, "unreadable"])
    assert w.finish() == (1, 1, 2)
    got = crosspool.read_shards(tmp_path / "w")
    assert got.names == ["a"] and got.failures[0]["reason"] == "unreadable"
    assert (got.features == 1).all()
