"""The run's schedule as data: how many steps, and what happens when a step ends.

Pure (no torch, no I/O): the loop asks :meth:`Schedule.after` once per epoch end or stop and does what it
says. A step counts ``d_steps`` global real batches; an epoch is one pass of D over the training set, the
remainder smaller than one step dropped. ``max_steps`` may end a run mid-epoch.

At a whole epoch's end: a grid every ``sample_every`` epochs, a checkpoint every ``checkpoint_every``, an
evaluation every ``eval_every`` (0: never); the last epoch does all three (evaluation where enabled), and a
stop request forces a checkpoint. Mid-epoch (max_steps reached, a signal): a grid and a checkpoint tagged
by step, evaluated only when that is the run's end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Maintenance:
    """What to do after a step: the checkpoint / grid tag, and which of grid, save and score."""

    epoch: int
    """Epochs completed (a whole-epoch event), or the epoch in progress (a mid-epoch stop)."""
    step: int
    tag: str
    grid: bool
    save: bool
    score: bool
    kind: str
    """The metrics.jsonl event: ``epoch_end``, or ``stop`` mid-epoch."""


@dataclass(frozen=True)
class Schedule:
    steps_per_epoch: int
    epochs: int
    max_steps: int | None = None
    sample_every: int = 1
    checkpoint_every: int = 1
    eval_every: int = 0

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1 or self.epochs < 1:
            raise ValueError(f"a schedule needs steps_per_epoch and epochs >= 1, got {self}")

    @classmethod
    def from_config(cls, cfg, n_images: int) -> Schedule:
        """The schedule of ``cfg`` over ``n_images`` training images (raises ValueError when too few)."""
        step_images = cfg.train.batch_size * cfg.train.d_steps
        o = cfg.output
        return cls(
            n_images // step_images,
            cfg.train.epochs,
            cfg.train.max_steps,
            o.sample_every_epochs,
            o.checkpoint_every_epochs,
            cfg.eval.every_epochs,
        )

    @property
    def total_steps(self) -> int:
        whole = self.steps_per_epoch * self.epochs
        return whole if self.max_steps is None else min(whole, self.max_steps)

    def epoch_of(self, step: int) -> int:
        """The epoch that step number ``step`` (0-based) belongs to."""
        return step // self.steps_per_epoch

    def epoch_end(self, epoch: int) -> int:
        """The step count at which ``epoch`` (0-based) stops: its end, or the run's end if sooner."""
        return min((epoch + 1) * self.steps_per_epoch, self.total_steps)

    def after(self, step: int, stopping: bool = False) -> Maintenance | None:
        """What to do once ``step`` steps are done. ``stopping``: a stop was requested (a checkpoint is due).
        None: nothing (mid-epoch, no stop). A stop requested during the last steps is simply the run's end."""
        finished = step == self.total_steps
        stopping = stopping and not finished
        if step > 0 and step % self.steps_per_epoch == 0:
            done = step // self.steps_per_epoch
            return Maintenance(
                epoch=done,
                step=step,
                tag=f"epoch-{done:03d}",
                grid=done % self.sample_every == 0 or finished,
                save=done % self.checkpoint_every == 0 or finished or stopping,
                score=bool(self.eval_every) and (done % self.eval_every == 0 or finished),
                kind="epoch_end",
            )
        if finished or stopping:
            return Maintenance(
                epoch=self.epoch_of(step),
                step=step,
                tag=f"step-{step:06d}",
                grid=True,
                save=True,
                score=finished and bool(self.eval_every),
                kind="stop",
            )
        return None
