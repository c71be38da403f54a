"""LR schedules: hand-computed multipliers at the boundaries of each phase."""

from __future__ import annotations

import math

import pytest
import torch

from learner.schedules import SCHEDULES, build_lr_lambda, constant, cosine, rewarm, wsd


def test_registry_names():
    assert SCHEDULES.names() == ["constant", "cosine", "rewarm", "wsd"]


def test_constant_with_warmup():
    # warmup 4: 0/4, 2/4, then 1 forever.
    values = [constant(s, total_steps=10, warmup_steps=4) for s in (0, 2, 4, 9, 100)]
    assert values == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_cosine_boundaries():
    kw = {"total_steps": 10, "warmup_steps": 2, "min_lr_ratio": 0.1}
    assert cosine(0, **kw) == 0.0
    assert cosine(1, **kw) == 0.5
    assert cosine(2, **kw) == 1.0  # peak right after warmup
    # midpoint of the decay, p = (6 - 2) / 8 = 0.5: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
    assert cosine(6, **kw) == pytest.approx(0.55, abs=1e-12)
    assert cosine(10, **kw) == pytest.approx(0.1)
    assert cosine(50, **kw) == pytest.approx(0.1)  # clamped past the end


def test_cosine_without_warmup_starts_at_peak():
    assert cosine(0, total_steps=4) == 1.0
    # p = 1/4: (1 + cos(pi/4)) / 2
    assert cosine(1, total_steps=4) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)


def test_rewarm_restarts_from_start_ratio():
    kw = {"total_steps": 10, "warmup_steps": 2, "start_lr_ratio": 0.2}
    # 0.2 -> 0.2 + 0.8 * 1/2 = 0.6 -> 1.0, then cosine down to min 0
    assert [rewarm(s, **kw) for s in (0, 1, 2)] == pytest.approx([0.2, 0.6, 1.0])
    assert rewarm(10, **kw) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        rewarm(0, total_steps=10, warmup_steps=0, start_lr_ratio=0.1)


@pytest.mark.parametrize(
    ("decay", "min_ratio", "step", "expected"),
    [
        ("linear", 0.0, 8, 0.5),  # p = (8 - 6) / 4 = 0.5
        ("linear", 0.0, 10, 0.0),
        ("1-sqrt", 0.0, 7, 0.5),  # p = 0.25: 1 - sqrt(0.25)
        ("exponential", 0.01, 8, 0.1),  # 0.01 ** 0.5
        ("exponential", 0.01, 10, 0.01),
    ],
)
def test_wsd_decay_phase(decay, min_ratio, step, expected):
    kw = {"total_steps": 10, "warmup_steps": 2, "decay_steps": 4, "min_lr_ratio": min_ratio}
    assert wsd(step, decay=decay, **kw) == pytest.approx(expected)


def test_wsd_warmup_and_stable_phase():
    kw = {"total_steps": 10, "warmup_steps": 2, "decay_steps": 4, "decay": "linear"}
    assert [wsd(s, **kw) for s in range(7)] == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "match"),
    [
        ("wsd", {"decay_steps": 4, "decay": "exponential"}, ValueError, "min_lr_ratio > 0"),
        ("wsd", {"decay_steps": 11}, ValueError, "decay_steps"),
        ("wsd", {"decay_steps": 2, "decay": "cubic"}, ValueError, "decay must be one of"),
        ("cosine", {"warmup_steps": 11}, ValueError, "warmup_steps"),
        ("cosine", {"min_lr_ratio": 1.5}, ValueError, "min_lr_ratio"),
        ("cosine", {"warmup": 3}, TypeError, "'cosine'"),
        ("linear", {}, KeyError, "known: constant, cosine, rewarm, wsd"),
    ],
)
def test_build_lr_lambda_rejects_bad_arguments(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_lr_lambda(name, total_steps=10, **kwargs)


def test_lambda_drives_torch_lambdalr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    fn = build_lr_lambda("cosine", total_steps=4, warmup_steps=2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # 0.5 * [0, 1/2, 1, cos-mid (p=1/2) = 1/2, 0]
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.25, 0.0])
