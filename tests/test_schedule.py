"""The run's schedule as a pure function: steps, and what each step's end carries (grid, checkpoint, evaluation)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from distgan.schedule import Maintenance, Schedule


def ends(s: Schedule, stopping_at: set[int] = frozenset()) -> dict[int, Maintenance]:
    """Every step's end that carries something, as the loop asks (it asks at epoch ends and stops only)."""
    out = {}
    for step in range(1, s.total_steps + 1):
        m = s.after(step, stopping=step in stopping_at)
        if m is not None:
            out[step] = m
    return out


def test_steps_count_whole_global_batches_and_max_steps_cuts_the_run():
    cfg = SimpleNamespace(
        train=SimpleNamespace(batch_size=64, d_steps=2, epochs=3, max_steps=None),
        output=SimpleNamespace(sample_every_epochs=1, checkpoint_every_epochs=1),
        eval=SimpleNamespace(every_epochs=0),
    )
    s = Schedule.from_config(cfg, 1000)  # 1000 // (64 * 2) = 7 steps, the rest of the epoch dropped
    assert (s.steps_per_epoch, s.total_steps) == (7, 21)
    assert [s.epoch_of(i) for i in (0, 6, 7, 20)] == [0, 0, 1, 2]
    assert s.epoch_end(2) == 21
    cfg.train.max_steps = 10
    s = Schedule.from_config(cfg, 1000)
    assert s.total_steps == 10 and s.epoch_end(1) == 10
    with pytest.raises(ValueError):
        Schedule.from_config(cfg, 100)  # not one step's images


def test_every_epoch_end_follows_its_cadence_and_the_last_does_everything():
    s = Schedule(steps_per_epoch=10, epochs=5, sample_every=2, checkpoint_every=3, eval_every=4)
    got = ends(s)
    assert sorted(got) == [10, 20, 30, 40, 50]  # nothing mid-epoch
    assert [got[k].tag for k in sorted(got)] == [f"epoch-{e:03d}" for e in range(1, 6)]
    assert {k: (m.grid, m.save, m.score) for k, m in got.items()} == {
        10: (False, False, False),
        20: (True, False, False),
        30: (False, True, False),
        40: (True, False, True),
        50: (True, True, True),  # the run's end: grid, checkpoint and evaluation whatever the cadence
    }
    assert all(m.kind == "epoch_end" and m.epoch == m.step // 10 for m in got.values())


def test_a_run_that_never_evaluates_never_scores():
    assert not any(m.score for m in ends(Schedule(steps_per_epoch=3, epochs=4, eval_every=0)).values())


def test_max_steps_mid_epoch_ends_with_a_step_tagged_grid_checkpoint_and_evaluation():
    s = Schedule(steps_per_epoch=10, epochs=5, max_steps=25, eval_every=1)
    got = ends(s)
    assert sorted(got) == [10, 20, 25]
    last = got[25]
    assert (last.tag, last.kind, last.epoch) == ("step-000025", "stop", 2)
    assert last.grid and last.save and last.score


def test_a_stop_request_forces_a_checkpoint_but_no_evaluation():
    s = Schedule(steps_per_epoch=10, epochs=5, checkpoint_every=100, eval_every=1)
    mid = s.after(13, stopping=True)
    assert (mid.tag, mid.kind, mid.grid, mid.save, mid.score) == ("step-000013", "stop", True, True, False)
    edge = s.after(20, stopping=True)  # at an epoch's end: the epoch's event, saved because of the stop
    assert (edge.tag, edge.kind, edge.save, edge.score) == ("epoch-002", "epoch_end", True, True)
    assert s.after(13) is None and s.after(20).save is False


def test_a_stop_requested_during_the_last_steps_is_the_runs_normal_end():
    s = Schedule(steps_per_epoch=10, epochs=2, max_steps=15, eval_every=1)
    assert s.after(15, stopping=True) == s.after(15, stopping=False)
    assert s.after(15).score  # finished: evaluated like any finished run
