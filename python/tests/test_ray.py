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
