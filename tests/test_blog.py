"""distgan.blog: each version's claim, its checks, and `make blog`'s machinery at CI size (synthetic data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distgan import blog, compare, config
from tests.conftest import python
from tests.test_compare import SMALL

ROOT = Path(__file__).resolve().parent.parent


def ev(epoch: int, is_: float, class_min: float = 0.05) -> dict:
    return {"epoch": epoch, "step": 100 * epoch, "is": is_, "class_min": class_min, "fid": 10.0, "classes_covered": 10}


@pytest.mark.parametrize(
    ("expect", "evals", "holds"),
    [
        ("digits", [ev(1, 2.0), ev(2, 7.5)], True),
        ("digits", [ev(1, 8.0), ev(2, 6.9)], False),  # judged at the budget, not at the best epoch
        ("digits", [ev(1, 2.0), ev(2, 9.0, class_min=0.039)], False),  # a class below 4%
        ("fails", [ev(1, 1.0), ev(2, 2.99)], True),
        ("fails", [ev(1, 3.0), ev(2, 1.0)], False),  # readable once: G learned something
        ("degrades", [ev(1, 4.0), ev(2, 3.0)], True),
        ("degrades", [ev(1, 4.0), ev(2, 3.1)], False),  # above 3/4 of its best
        ("degrades", [ev(1, 2.9), ev(2, 1.0)], False),  # never readable
        ("none", [ev(1, 9.0)], None),
    ],
)
def test_outcomes(expect, evals, holds):
    assert blog.outcome(expect, evals) is holds


def test_verdict_counts_seeds_and_refuses_to_judge_a_cut_budget():
    good, bad = {"evals": [ev(1, 8.0)]}, {"evals": [ev(1, 1.0)]}
    assert blog.verdict("digits", [good, good, bad], 10) == "holds (2 of 3 seeds)"
    assert blog.verdict("digits", [good, bad, bad], 10) == "does not hold (1 of 3 seeds)"
    assert blog.verdict("digits", [good, bad], 10) == "split (1 of 2 seeds)"
    capped = blog.verdict("digits", [good, good], 10, cut="2")
    assert capped.startswith("not checked: 2 of its 10 epochs") and "2 of 2 seeds" in capped
    assert blog.verdict("fails", [bad], 5, cut="6 steps").startswith("not checked: 6 steps of its 5 epochs")
    assert blog.verdict("none", [good], 10).startswith("no outcome claimed")


def test_version_sets_apply_to_every_version_or_to_one():
    own = blog.version_sets(
        ["eval.samples=500", "v1:train.max_steps=6", "v5:model.g_args={dropout: 0.0}"], ["v1", "v5"]
    )
    assert own == {
        "v1": ["eval.samples=500", "train.max_steps=6"],
        "v5": ["eval.samples=500", "model.g_args={dropout: 0.0}"],
    }
    with pytest.raises(blog.CompareError, match="no version named 'v9'"):
        blog.version_sets(["v9:train.epochs=1"], ["v1", "v5"])


def test_every_shipped_version_states_a_claim_and_a_budget():
    shipped = {p.stem for p in (ROOT / "configs").glob("v*.yaml")} | {"final"}
    assert set(blog.VERSIONS) == shipped
    for path in blog.default_configs(ROOT / "configs"):
        cfg = config.load(path)
        assert cfg.claim.text and cfg.claim.expect in ("none", "digits", "fails", "degrades"), path
    assert config.load(ROOT / "configs/v5.yaml").claim.expect == "digits"
    assert config.load(ROOT / "configs/v5.yaml").train.epochs == 10
    assert config.load(ROOT / "configs/final.yaml").train.epochs == 50


def test_a_claim_is_not_part_of_a_runs_identity():
    a = config.load(ROOT / "configs/v5.yaml").to_dict()
    b = config.load(ROOT / "configs/v5.yaml", ["claim.text=something else", "claim.expect=fails"]).to_dict()
    assert compare._identity(a) == compare._identity(b)
    c = config.load(ROOT / "configs/v5.yaml", ["train.seed=1"]).to_dict()
    assert compare._identity(a) != compare._identity(c)


def tiny(name: str, lr: float, epochs: int, text: str, expect: str) -> str:
    """test_compare's small synthetic config, with its own learning rate, budget and claim."""
    base = SMALL.format(name=name, width=32).replace("lr: 1.0e-3", f"lr: {lr}")
    return (
        base.replace("log_every: 8}", f"log_every: 8, epochs: {epochs}}}")
        + f'claim: {{text: "{text}", expect: {expect}}}\n'
    )


@pytest.mark.slow
def test_make_blog_machinery_end_to_end_on_tiny_budgets(tmp_path):
    """Two versions at their own budgets (1 and 2 epochs), 2 seeds: every verdict is computed from the runs'
    evaluations, the report names each claim, and a second invocation reuses every run."""
    specs = [("frozen", 1.0e-9, 1, "G never learns", "fails"), ("learner", 1.0e-3, 2, "learns", "none")]
    paths = []
    for name, lr, epochs, text, expect in specs:
        path = tmp_path / f"{name}.yaml"
        path.write_text(tiny(name, lr, epochs, text, expect))
        paths.append(str(path))
    args = [*paths, "--seeds", "0,1", "--out", str(tmp_path / "report"), "--runs-dir", str(tmp_path / "runs")]
    first = python("distgan.blog", *args, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| frozen | G never learns | `fails` | holds (2 of 2 seeds) |" in report  # lr 1e-9: still noise
    assert "| learner | learns | `none` | no outcome claimed: measured only |" in report
    assert "Budget: 2 epochs; trained 2, seeds 0, 1" in report
    for name in ("report.md", "table.csv", "runs.csv", "curves.png", "montage.png"):
        assert (tmp_path / "report" / name).is_file(), name
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert [r.split("-")[:3] for r in runs] == [
        ["frozen", "s0", "e1"],
        ["frozen", "s1", "e1"],
        ["learner", "s0", "e2"],
        ["learner", "s1", "e2"],
    ]
    again = python("distgan.blog", *args, "--max-epochs", "1", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("reusing") == 2  # frozen's runs; learner capped at 1 epoch is a new run
    assert "not checked" not in again.stdout.split("frozen:")[1].splitlines()[0]
