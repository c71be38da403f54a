"""Learning-rate schedules as pure functions of the optimizer step.

Every entry of ``SCHEDULES`` is called as ``fn(step, *, total_steps, **kwargs) -> float`` and
returns the LR *multiplier* (a fraction of the peak LR the optimizer was built with), so it plugs
straight into ``torch.optim.lr_scheduler.LambdaLR``. ``step`` is the 0-based index of the
optimizer step about to be taken; steps past ``total_steps`` keep the final value.

Warmup follows the Hugging Face convention: the multiplier rises linearly from
``start_lr_ratio`` (0 by default, i.e. step 0 runs at LR 0) and reaches 1 at step
``warmup_steps``.

* ``constant``: warmup, then 1.
* ``cosine``: warmup, then cosine decay from 1 to ``min_lr_ratio`` at ``total_steps``.
* ``rewarm``: cosine for *continued* training of an already-decayed model (the tutorial's
  "re-warming and re-decaying the learning rate", Ibrahim et al. 2024): the warmup restarts from
  ``start_lr_ratio`` (typically the previous stage's final ratio, e.g. 0.1) up to the peak, then
  decays again. The step count restarts at 0 for the new stage.
* ``wsd``: warmup-stable-decay, the "infinite" schedule (Hägele et al. 2024): warmup, constant
  peak, and a final decay over the last ``decay_steps`` steps, ``linear``, ``1-sqrt`` or
  ``exponential`` (geometric from 1 to ``min_lr_ratio``, which must be > 0).

This module does not touch optimizers; ``build_lr_lambda`` binds a schedule's keyword arguments
and validates them once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from rlsys.registry import Registry

ScheduleFn = Callable[..., float]
SCHEDULES: Registry[ScheduleFn] = Registry("LR schedule")

WSD_DECAYS = ("linear", "1-sqrt", "exponential")


def _check_common(total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def _warmup(step: int, warmup_steps: int, start_lr_ratio: float) -> float:
    """Linear ramp from ``start_lr_ratio`` at step 0 to 1 at ``warmup_steps``."""
    return start_lr_ratio + (1.0 - start_lr_ratio) * step / warmup_steps


def _cosine_decay(progress: float, min_lr_ratio: float) -> float:
    """Half cosine from 1 (progress 0) to ``min_lr_ratio`` (progress 1)."""
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULES.decorator("constant")
def constant(step: int, *, total_steps: int, warmup_steps: int = 0) -> float:
    """Linear warmup over ``warmup_steps``, then the peak LR (multiplier 1) forever."""
    _check_common(total_steps, warmup_steps, 0.0)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, 0.0)
    return 1.0


@SCHEDULES.decorator("cosine")
def cosine(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    start_lr_ratio: float = 0.0,
) -> float:
    """Warmup from ``start_lr_ratio`` to 1, then ``min + (1 - min) (1 + cos(pi p)) / 2`` with
    ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clamped to [0, 1]."""
    _check_common(total_steps, warmup_steps, min_lr_ratio)
    if not 0.0 <= start_lr_ratio <= 1.0:
        raise ValueError(f"start_lr_ratio must be in [0, 1], got {start_lr_ratio}")
    if step < warmup_steps:
        return _warmup(step, warmup_steps, start_lr_ratio)
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return _cosine_decay(progress, min_lr_ratio)


@SCHEDULES.decorator("rewarm")
def rewarm(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    start_lr_ratio: float,
    min_lr_ratio: float = 0.0,
) -> float:
    """Cosine with re-warming for continued training: the LR climbs again from
    ``start_lr_ratio`` (where the previous stage left it) to the peak over ``warmup_steps``,
    then decays to ``min_lr_ratio``. Same curve as ``cosine`` with these arguments required."""
    if warmup_steps < 1:
        raise ValueError(f"rewarm needs warmup_steps >= 1, got {warmup_steps}")
    return cosine(
        step,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        min_lr_ratio=min_lr_ratio,
        start_lr_ratio=start_lr_ratio,
    )


def _wsd_decay(progress: float, decay: str, min_lr_ratio: float) -> float:
    if decay == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    if decay == "1-sqrt":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - math.sqrt(progress))
    return min_lr_ratio**progress  # exponential: geometric interpolation from 1 to min


@SCHEDULES.decorator("wsd")
def wsd(
    step: int,
    *,
    total_steps: int,
    decay_steps: int,
    warmup_steps: int = 0,
    decay: str = "1-sqrt",
    min_lr_ratio: float = 0.0,
) -> float:
    """Warmup-stable-decay: warmup to 1, hold 1 until ``total_steps - decay_steps``, then decay
    to ``min_lr_ratio`` at ``total_steps`` with ``decay`` in ``linear``, ``1-sqrt``
    (``1 - sqrt(p)``), ``exponential`` (``min_lr_ratio ** p``)."""
    _check_common(total_steps, warmup_steps, min_lr_ratio)
    if decay not in WSD_DECAYS:
        raise ValueError(f"decay must be one of {WSD_DECAYS}, got {decay!r}")
    if not 1 <= decay_steps <= total_steps - warmup_steps:
        raise ValueError(
            f"decay_steps must be in [1, total_steps - warmup_steps = "
            f"{total_steps - warmup_steps}], got {decay_steps}"
        )
    if decay == "exponential" and min_lr_ratio <= 0.0:
        raise ValueError("wsd decay='exponential' needs min_lr_ratio > 0")
    if step < warmup_steps:
        return _warmup(step, warmup_steps, 0.0)
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / decay_steps)
    return _wsd_decay(progress, decay, min_lr_ratio)


def build_lr_lambda(name: str, *, total_steps: int, **kwargs: object) -> Callable[[int], float]:
    """Bind schedule ``name`` to its arguments; evaluates step 0 once so bad arguments fail here
    (unknown names list the registry; unknown keywords raise ``TypeError``)."""
    fn = partial(SCHEDULES.get(name), total_steps=total_steps, **kwargs)
    try:
        fn(0)
    except TypeError as err:
        raise TypeError(f"LR schedule {name!r}: {err}") from None
    return fn
