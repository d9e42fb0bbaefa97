"""The evaluator and its metrics: maths on known cases, the classifier's accuracy, FID floor against noise,
caching, and the command line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distgan import data, evaluate, metrics
from distgan.models.classifier import Classifier
from tests.conftest import REPO


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "distgan.evaluate", *args], capture_output=True, text=True, check=False, cwd=REPO
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------- metrics on known cases


def test_fid_is_zero_for_one_set_and_the_mean_shift_for_equal_covariances():
    x = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert metrics.fid(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([3.0, 0, 0, 0, 0, 0, 0, 4.0], dtype=torch.float64)
    assert metrics.fid(x, x + shift) == pytest.approx(25.0, rel=1e-9)  # |mu1 - mu2|^2, covariance identical


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    mu = torch.zeros(3, dtype=torch.float64)
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0, 9.0])).double(), torch.diag(torch.tensor([4.0, 4.0, 1.0])).double()
    # sum (sqrt(a) - sqrt(b))^2 over the diagonal: (1-2)^2 + 0 + (3-1)^2
    assert metrics.frechet_distance(mu, s1, mu, s2) == pytest.approx(5.0, rel=1e-9)


def test_inception_score_runs_from_one_to_the_number_of_classes():
    assert metrics.inception_score(torch.zeros(100, 10)) == pytest.approx(1.0)  # no confidence at all
    confident = torch.full((1000, 10), -50.0)
    confident[torch.arange(1000), torch.arange(1000) % 10] = 50.0
    assert metrics.inception_score(confident) == pytest.approx(10.0, rel=1e-6)  # sure and balanced
    one_class = torch.full((1000, 10), -50.0)
    one_class[:, 3] = 50.0
    assert metrics.inception_score(one_class) == pytest.approx(1.0, rel=1e-6)  # sure but collapsed


def test_class_shares_and_coverage_see_mode_collapse():
    logits = torch.zeros(200, 10)
    logits[torch.arange(200), torch.tensor([0] * 150 + [1] * 48 + [2] * 2)] = 1.0
    shares = metrics.class_shares(logits)
    assert shares[:3] == [0.75, 0.24, 0.01] and sum(shares) == pytest.approx(1.0)
    assert metrics.classes_covered(shares) == 3 and metrics.classes_covered(shares, 0.05) == 2


def test_precision_and_recall_separate_quality_from_diversity():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(600, 16, generator=g) + 10.0 * torch.eye(16)[torch.arange(600) % 2]  # two modes
    same = torch.randn(600, 16, generator=g) + 10.0 * torch.eye(16)[torch.arange(600) % 2]
    one_mode = torch.randn(600, 16, generator=g) + 10.0 * torch.eye(16)[0]
    far = torch.randn(600, 16, generator=g) + 10.0 * torch.eye(16)[5]
    p, r = metrics.precision_recall(real, same)  # k=3 balls on 600 points cover ~80% of a fresh draw
    assert p > 0.7 and r > 0.7
    p, r = metrics.precision_recall(real, one_mode)
    assert p > 0.7 and 0.3 < r < 0.5  # good samples of one mode out of two
    p, r = metrics.precision_recall(real, far)
    assert p < 0.05 and r < 0.05


# --------------------------------------------------------------------------- the evaluator


def naive_kid(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD^2 with the cubic kernel, term by term (Binkowski et al., 2018, eq. 3)."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randn(12, 5, generator=g, dtype=torch.float64)
    whole, spread = metrics.kid(x, y, subsets=1, scaled=False)  # one subset of every sample: the full estimate
    assert whole == pytest.approx(naive_kid(x, y), rel=1e-5) and spread == 0.0
    rms = x.pow(2).mean().sqrt()
    assert metrics.kid(x, y, subsets=1)[0] == pytest.approx(naive_kid(x / rms, y / rms), rel=1e-5)
    assert metrics.kid(10 * x, 10 * y, subsets=1)[0] == pytest.approx(metrics.kid(x, y, subsets=1)[0], rel=1e-5)
    a, b = torch.randn(3000, 16, generator=g), torch.randn(3000, 16, generator=g)
    same, std = metrics.kid(a, b, subsets=20)
    shifted, _ = metrics.kid(a, b + 0.5, subsets=20)
    assert abs(same) < 3 * std and shifted > 10 * std > 0  # unbiased: no offset that depends on the sample count
    assert metrics.kid(a, b, subsets=20) == (same, std)  # subsets fixed by their seed


def test_synthetic_evaluator_is_deterministic_cached_and_keyed_by_its_recipe(tmp_path):
    recipe = evaluate.Recipe(epochs=1, batch_size=64)
    a = evaluate.fit("synthetic", tmp_path / "a", recipe, log=lambda m: None)
    b = evaluate.fit("synthetic", tmp_path / "b", recipe, log=lambda m: None)
    wa, wb = load_file(a.path), load_file(b.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # same recipe and seed: the very same weights
    assert a.info["test_accuracy"] == b.info["test_accuracy"]
    assert a.info["test_accuracy"] > 0.8  # chance is 0.1; one epoch is enough to learn the classes
    other = evaluate.cache_path(tmp_path / "a", "synthetic", evaluate.Recipe(epochs=2, batch_size=64))
    assert other != a.path  # another recipe never reuses a cached evaluator


def test_the_evaluator_cache_key_covers_the_architecture_and_the_data_files_and_nothing_else(monkeypatch, tmp_path):
    """README: the evaluator is cached as `data/evaluators/mnist-<hash>.safetensors`, "the hash covering the
    recipe, the architecture and the data files' sha256". On the key alone (cache_path; nothing refitted):
    another architecture tag, or one data file's sha256 changed, names another file; an equal recipe, another
    root, or where the files come from (mirror, probe host) name the same one: the evaluator the README
    measured with."""

    def key(dataset: str = "mnist", root: Path = tmp_path) -> str:
        return evaluate.cache_path(root, dataset).name

    base, fashion, synthetic = key(), key("fashion_mnist"), key("synthetic")
    assert evaluate.cache_path(tmp_path / "elsewhere", "mnist", evaluate.Recipe()).name == base
    mnist = data.DATASETS["mnist"]
    with monkeypatch.context() as m:
        m.setitem(data.DATASETS, "mnist", dataclasses.replace(mnist, mirror=None, probe_host="example.org"))
        assert key() == base  # where the files are fetched from is not what they are
    with monkeypatch.context() as m:
        m.setattr(evaluate, "ARCH", evaluate.ARCH + "-next")
        assert key() != base and key("fashion_mnist") != fashion and key("synthetic") != synthetic
    assert key() == base
    for name, spec in mnist.files.items():
        with monkeypatch.context() as m:
            m.setitem(mnist.files, name, dataclasses.replace(spec, sha256=hashlib.sha256(b"other").hexdigest()))
            assert key() != base, name
            assert key("fashion_mnist") == fashion, name  # another dataset's files: its key stays
        assert key() == base
    named = re.search(r"data/evaluators/(mnist-[0-9a-f]{12})", (REPO / "README.md").read_text()).group(1)
    assert base == f"{named}.safetensors"  # the README's figures come from the evaluator this code keys


# evaluate.ARCH is a tag bumped by hand when models/classifier.py changes; the network each tag names, as
# blake2b (8 bytes) of repr(Classifier()): record a new tag's fingerprint here when the classifier changes.
ARCHITECTURES = {"classifier-v1": "3c713ca74f7b1308"}


def test_the_architecture_tag_names_the_classifier_that_is_built():
    """The cache key covers the architecture through evaluate.ARCH only: a classifier changed without a new
    tag would reuse a cached evaluator of the old network. So the tag is pinned to the network it names."""
    fingerprint = hashlib.blake2b(repr(Classifier()).encode(), digest_size=8).hexdigest()
    assert ARCHITECTURES.get(evaluate.ARCH) == fingerprint, "models/classifier.py changed: bump evaluate.ARCH"


def test_a_damaged_evaluator_cache_says_how_to_recover(tmp_path):
    path = evaluate.cache_path(tmp_path, "synthetic")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(evaluate.EvaluatorError, match="delete it and run python -m distgan.evaluate fit"):
        evaluate.load("synthetic", tmp_path)
    with pytest.raises(evaluate.EvaluatorError, match="no evaluator for mnist"):
        evaluate.load("mnist", tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.real_data
def test_mnist_evaluator_reaches_99_percent_and_fid_separates_real_from_noise(mnist_root):
    out = cli("fit", "--dataset", "mnist", "--root", str(mnist_root)).stdout  # fits once (~2.5 min), then cached
    accuracy = float(re.search(r"test accuracy (\d+\.\d+)%", out).group(1))
    assert accuracy >= 99.0, out
    ev = evaluate.load("mnist", mnist_root)
    floor = evaluate.floor(ev, mnist_root)  # 10k training images against the 10k test images
    noise = torch.randint(0, 256, (10_000, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    junk = evaluate.score(ev, evaluate.reference(ev, mnist_root), noise)
    assert floor["fid"] < 10 and floor["is"] > 9.5 and floor["classes_covered"] == 10
    assert junk["fid"] > 100 * floor["fid"]  # orders of magnitude apart
    assert abs(floor["kid"]) < 0.01 < junk["kid"]
    assert floor["precision"] > 0.8 and floor["recall"] > 0.8
    assert junk["precision"] < 0.05 and junk["recall"] < 0.05


@pytest.mark.slow  # the only test of make test that needed the MNIST evaluator: 2.3 minutes to fit on a fresh machine
@pytest.mark.real_data
def test_evaluate_cli_scores_saved_samples_and_refuses_bad_files(mnist_root, tmp_path):
    evaluate.load("mnist", mnist_root, fit_if_missing=True, log=lambda m: None)
    from distgan.data import load_split

    test_images, _ = load_split("mnist", mnist_root, train=False)
    np.savez(tmp_path / "real.npz", images=test_images.numpy())  # the reference set itself
    out = cli("--samples", str(tmp_path / "real.npz"), "--root", str(mnist_root), "--out", str(tmp_path / "m.json"))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["samples"] == 10_000 and m["classes_covered"] == 10 and "IS" in out.stdout
    assert m["fid"] < 1e-6 and m["precision"] == m["recall"] == 1.0  # a set against itself
    np.savez(tmp_path / "float.npz", images=np.zeros((10, 28, 28), np.float32))
    bad = cli("--samples", str(tmp_path / "float.npz"), "--root", str(mnist_root), check=False)
    assert bad.returncode == 1 and "expected uint8 images (N, 28, 28)" in bad.stderr
    missing = cli("--samples", str(tmp_path / "nope.npz"), check=False)
    assert missing.returncode == 1 and "cannot read images" in missing.stderr


def test_evaluation_noise_is_fixed_by_its_seed():
    z = evaluate.eval_noise(10, 4, seed=0)
    assert torch.equal(z, evaluate.eval_noise(10, 4, seed=0)) and not torch.equal(z, evaluate.eval_noise(10, 4, 1))
