"""The Python package held to the command line it shares its library with.

Run by tools/test_python.sh (and so by CI) against a wheel installed in a fresh virtual
environment. Needs the real VGG16 (tools/fetch_weights.sh) and the built `crosspool` binary
(CROSSPOOL_BIN, default target/release/crosspool).
"""

import json
import os
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import crosspool

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights" / "vgg16_hed.safetensors"
PHOTOS = REPO / "tests" / "data" / "photos"
RETRIEVAL = REPO / "tests" / "data" / "retrieval"
BIN = Path(os.environ.get("CROSSPOOL_BIN", REPO / "target" / "release" / "crosspool"))
SIZE = "160"


def cli(*args, check=True):
    """Runs the crosspool binary; its completed process."""
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    if check and p.returncode not in (0, 2):
        raise AssertionError(f"crosspool {' '.join(map(str, args))}: {p.stderr}")
    return p


def bits(a):
    """The array's exact bits, for bit-for-bit comparisons of floats."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def write_png(path, rgb):
    """A minimal 8-bit RGB PNG (no filter), so the test needs nothing but numpy."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


def photo_like(h, w, seed=0):
    """A smooth image with some texture: gradients plus low noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The sample photos with an empty file and a missing one among them."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "empty.jpg").write_bytes(b"")
    names = sorted(p for p in PHOTOS.glob("*.jpg"))
    return [names[0], d / "empty.jpg", names[1], d / "missing.jpg", *names[2:]]


def cpu_has_amx_bf16():
    """Whether the CPU lists AMX-BF16 (Linux), which --precision bf16 on the CPU needs."""
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read().split()
    except OSError:
        return False


@pytest.mark.parametrize(
    "device,fmt,precision",
    [
        ("cpu", "f32", "f32"),
        ("cpu", "f16", "f32"),
        ("cpu", "bits1", "f32"),
        pytest.param("cpu", "f32", "bf16", marks=pytest.mark.skipif(
            not cpu_has_amx_bf16(), reason="--precision bf16 needs AMX-BF16")),
        ("gpu", "f32", "f32"),
        ("gpu", "f32", "f16"),
    ],
)
def test_features_equal_the_command_lines_bit_for_bit(tmp_path, inputs, device, fmt, precision):
    items = inputs if device == "cpu" else inputs[:3]
    out = tmp_path / "feats"
    p = cli("extract", "-q", "--device", device, "--size", SIZE, "--batch", "2",
            "--format", fmt, "--precision", precision, "--weights", WEIGHTS, "-o", out, *items)
    assert p.returncode == 2, p.stderr  # some inputs failed
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), batch=2, format=fmt, device=device,
                             precision=precision)
    got = ex.extract([str(i) for i in items])
    shards = crosspool.read_shards(out)
    assert got.features.dtype == shards.features.dtype
    assert got.features.shape == shards.features.shape
    assert np.array_equal(bits(got.features), bits(shards.features))
    assert np.array_equal(bits(got.guide_mean), bits(shards.guide_mean))
    # The same items failed for the same reasons; the others kept their order.
    cli_failed = [(r["path"], r["reason"]) for r in shards.failures]
    assert [(f.item, f.reason) for f in got.failures] == cli_failed
    assert [str(items[i]) for i in got.indices] == shards.names
    assert [f.index for f in got.failures] == [1, 3][: len(got.failures)]


def test_an_array_equals_its_file_after_the_same_resize(tmp_path):
    rgb = photo_like(300, 420)
    png = tmp_path / "image.png"
    write_png(png, rgb)
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), device="cpu")
    out = ex.extract([png, rgb, np.asfortranarray(rgb)])
    assert out.indices == [0, 1, 2] and not out.failures
    assert np.array_equal(bits(out.features[0]), bits(out.features[1]))
    assert np.array_equal(bits(out.features[0]), bits(out.features[2]))
    # Control: another image differs.
    other = ex.extract([photo_like(300, 420, seed=1)])
    assert not np.array_equal(out.features[0], other.features[0])


def test_a_failing_item_is_reported_and_never_loses_the_others(tmp_path):
    good = sorted(PHOTOS.glob("*.jpg"))[:2]
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), device="cpu", batch=3)
    alone = ex.extract(good)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    items = [
        tmp_path / "broken.jpg",
        good[0],
        np.zeros((40, 40, 4), np.uint8),
        np.zeros((40, 40, 3), np.float32),
        tmp_path / "missing.png",
        good[1],
    ]
    out = ex.extract(items)
    assert out.indices == [1, 5]
    assert np.array_equal(bits(out.features), bits(alone.features))
    reasons = {f.index: (f.item, f.reason) for f in out.failures}
    assert sorted(reasons) == [0, 2, 3, 4]
    assert reasons[0][0].endswith("broken.jpg")
    assert "truncated JPEG" in reasons[0][1]
    assert reasons[2] == ("<array 2>", reasons[2][1]) and "height x width x 3" in reasons[2][1]
    assert "uint8" in reasons[3][1]
    assert "No such file" in reasons[4][1]
    with pytest.raises(TypeError, match="item 0: not a path"):
        ex.extract([42])


def test_progress_is_reported_and_the_gil_is_released():
    photos = sorted(PHOTOS.glob("*.jpg")) * 3
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), device="cpu", batch=2)
    calls = []
    ex.extract(photos, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (12, 12)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Bar:  # what tqdm offers
        total, n = None, 0

        def update(self, k):
            self.n += k

    bar = Bar()
    ex.extract(photos, progress=bar)
    assert (bar.total, bar.n) == (12, 12)

    # A Python thread keeps running while the features are computed: it leaves timestamps
    # in the middle half of the call (the GIL held would stop it for the whole call, and let
    # it run only before and after).
    stamps, stop = [], threading.Event()

    def count():
        i = 0
        while not stop.is_set():
            i += 1
            if i % 1000 == 0:
                stamps.append(time.perf_counter())

    t = threading.Thread(target=count)
    t.start()
    try:
        t0 = time.perf_counter()
        ex.extract(photos)
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
    lo, hi = t0 + 0.25 * (t1 - t0), t0 + 0.75 * (t1 - t0)
    assert sum(lo < s < hi for s in stamps) >= 10, (t1 - t0, len(stamps))


def test_errors_carry_the_command_lines_message(tmp_path):
    missing = tmp_path / "nothing.safetensors"
    with pytest.raises(crosspool.CrosspoolError) as e:
        crosspool.Extractor(missing)
    p = cli("extract", "--weights", missing, "-o", tmp_path / "o", PHOTOS, check=False)
    assert p.returncode == 1
    assert str(e.value) in p.stderr, (str(e.value), p.stderr)
    with pytest.raises(ValueError, match="format='f64' is not one of: f32, f16, sign2, bits1"):
        crosspool.Extractor(WEIGHTS, format="f64")
    with pytest.raises(crosspool.CrosspoolError, match="holds no finished shards"):
        crosspool.read_shards(tmp_path)


def test_read_shards_maps_one_shard_and_joins_several(tmp_path):
    photos = sorted(PHOTOS.glob("*.jpg"))
    for name, rows in [("one", "16"), ("three", "2")]:
        cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--shard-rows", rows,
            "--weights", WEIGHTS, "-o", tmp_path / name, *photos)
    one, three = crosspool.read_shards(tmp_path / "one"), crosspool.read_shards(tmp_path / "three")
    assert isinstance(one.features, np.memmap)
    assert np.array_equal(bits(one.features), bits(three.features))
    assert one.names == three.names == [str(p) for p in photos]
    assert [r["index"] for r in three.rows] == [0, 1, 2, 3]


def test_read_shards_refuses_parts_extracted_otherwise(tmp_path):
    photos = sorted(PHOTOS.glob("*.jpg"))
    for part, size in [(0, SIZE), (1, str(int(SIZE) + 32))]:
        cli("extract", "-q", "--device", "cpu", "--size", size, "--shard", f"{part}/2",
            "--weights", WEIGHTS, "-o", tmp_path / f"p{part}", *photos)
    # Both parts' shards in one directory, without the settings files that make extract
    # refuse such a part (as an older crosspool, or a copy, could leave them).
    out = tmp_path / "out"
    out.mkdir()
    for part in (0, 1):
        for f in (tmp_path / f"p{part}").iterdir():
            if f.suffix in (".safetensors", ".jsonl"):
                (out / f.name).write_bytes(f.read_bytes())
    with pytest.raises(crosspool.CrosspoolError, match="extracted otherwise.*size"):
        crosspool.read_shards(out)
    assert crosspool.read_shards(tmp_path / "p1").features.shape[0] == 2


def test_a_shard_of_failed_images_reads_as_no_rows(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    # Walked in name order: the first shard of two holds the two empty files.
    (imgs / "a.jpg").write_bytes(b"")
    (imgs / "b.jpg").write_bytes(b"")
    for src, to in [("coffee.jpg", "c.jpg"), ("rocket.jpg", "d.jpg")]:
        (imgs / to).write_bytes((PHOTOS / src).read_bytes())
    cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--shard-rows", "2",
        "--weights", WEIGHTS, "-o", tmp_path / "out", imgs)
    shards = crosspool.read_shards(tmp_path / "out")
    assert shards.features.shape[0] == 2 and len(shards.failures) == 2
    assert shards.guide_mean is not None and shards.guide_mean.shape[0] == 2


def test_index_search_and_eval_agree_with_the_command_line(tmp_path):
    feats, idx = tmp_path / "feats", tmp_path / "idx"
    cli("extract", "-q", "--device", "cpu", "--size", SIZE, "--norm", "retrieval",
        "--weights", WEIGHTS, "-o", feats, RETRIEVAL)
    cli("index", feats, "--out", idx)
    gt = RETRIEVAL / "groundtruth.jsonl"
    want = json.loads(cli("eval", "--json", "--device", "cpu", "--index", idx,
                          "--ground-truth", gt, "-k", "50").stdout)
    index = crosspool.Index(idx, device="cpu")
    assert len(index) == want["images"]
    got = index.eval(gt, channels=50)
    assert got["map"] == want["map"] and got["recall_at_1"] == want["recall_at_1"]
    assert [(n, ap, h) for n, ap, h in got["per_query"]] == [
        (q["query"], q["ap"], q["hit_at_1"]) for q in want["per_query"]
    ]
    queries = [RETRIEVAL / "chelsea_rotate.jpg", PHOTOS / "coffee.jpg"]
    lines = cli("search", "--json", "--device", "cpu", "--index", idx, "--top", "4",
                "--query", *queries).stdout.splitlines()
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), norm="retrieval", device="cpu")
    hits = index.search(ex.extract(queries), top=4)
    for line, mine in zip(lines, hits):
        theirs = [(r["path"], r["score"]) for r in json.loads(line)["results"]]
        assert mine == theirs
    assert hits[0][0][0].endswith("chelsea_rotate.jpg")


def readme_python_example():
    text = (REPO / "README.md").read_text()
    marker = "run as written by python/tests/test_crosspool.py"
    block = text[text.index(marker):].split("```python\n", 1)[1]
    return block[: block.index("```")]


def test_the_readme_example_runs_as_written(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "(4, 512, 512)" in printed and "[0, 1, 2, 4]" in printed, printed
    assert "Failure(index=3" in printed, printed


def write_safetensors(path, tensors, metadata):
    """A safetensors file of f32 arrays (the format: an 8-byte header length, a JSON header
    of names, dtypes, shapes and byte ranges, then the bytes), so the test needs only numpy."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def resnet50_tensors(seed=0):
    """Random ResNet-50 weights in torchvision's names, batch norms included (He-scaled
    convolutions; each block's last batch norm small, as in trained networks)."""
    rng = np.random.default_rng(seed)
    t = {}

    def conv_bn(conv, bn, cin, cout, k, gamma=1.0):
        t[f"{conv}.weight"] = rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k))
        t[f"{bn}.weight"] = gamma * rng.uniform(0.5, 1.0, cout)
        t[f"{bn}.bias"] = rng.normal(0, 0.1, cout)
        t[f"{bn}.running_mean"] = rng.normal(0, 0.1, cout)
        t[f"{bn}.running_var"] = rng.uniform(0.5, 1.5, cout)

    conv_bn("conv1", "bn1", 3, 64, 7)
    cin = 64
    for s, n in enumerate([3, 4, 6, 3], 1):
        width = 64 << (s - 1)
        for b in range(n):
            p = f"layer{s}.{b}"
            conv_bn(f"{p}.conv1", f"{p}.bn1", cin, width, 1)
            conv_bn(f"{p}.conv2", f"{p}.bn2", width, width, 3)
            conv_bn(f"{p}.conv3", f"{p}.bn3", width, 4 * width, 1, gamma=0.2)
            if b == 0:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", cin, 4 * width, 1)
            cin = 4 * width
    return t


def test_resnet50_features_equal_the_command_lines(tmp_path):
    weights = tmp_path / "resnet50.safetensors"
    write_safetensors(weights, resnet50_tensors(), {"crosspool.arch": "resnet50"})
    photos = sorted(str(p) for p in PHOTOS.glob("*.jpg"))
    out = tmp_path / "feats"
    p = cli("extract", "-q", "--device", "cpu", "--size", "64", "--batch", "2",
            "--weights", weights, "-o", out, *photos)
    assert p.returncode == 0, p.stderr
    ex = crosspool.Extractor(weights, size=64, batch=2, device="cpu")
    got = ex.extract(photos)
    shards = crosspool.read_shards(out)
    # The default pair, layer4.1 x layer4.2: 2048 x 2048 per image.
    assert got.features.shape == (len(photos), 2048, 2048)
    assert np.array_equal(bits(got.features), bits(shards.features))
    assert np.array_equal(bits(got.guide_mean), bits(shards.guide_mean))


def test_bytes_items_equal_their_files():
    photos = sorted(PHOTOS.glob("*.jpg"))
    ex = crosspool.Extractor(WEIGHTS, size=int(SIZE), batch=2, device="cpu")
    from_files = ex.extract([str(p) for p in photos])
    items = [p.read_bytes() for p in photos] + [b"", bytearray(b"not an image")]
    from_bytes = ex.extract(items)
    assert np.array_equal(bits(from_bytes.features), bits(from_files.features))
    assert [(f.index, f.item) for f in from_bytes.failures] == [
        (len(photos), f"<bytes {len(photos)}>"), (len(photos) + 1, f"<bytes {len(photos) + 1}>")]
    assert "empty" in from_bytes.failures[0].reason
