"""MixtureSampler / Curriculum: exact resume, proportions, per-source epochs, determinism."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import pytest

from rlsys.data.mixture import Curriculum, MixtureSampler, batches

SIZES = {"domain": 13, "replay": 5, "chat": 7}
WEIGHTS = {"domain": 0.6, "replay": 0.1, "chat": 0.3}


def _take(sampler, n):
    return list(itertools.islice(sampler, n))


def test_resume_continues_the_same_order():
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=3)
    _take(sampler, 37)
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a JSON round trip
    expected = _take(sampler, 50)
    resumed = MixtureSampler(SIZES, WEIGHTS, seed=3)
    resumed.load_state_dict(state)
    assert _take(resumed, 50) == expected
    assert resumed.num_drawn == 87


def test_resume_across_block_and_phase_boundaries():
    phases = [(1030, {"domain": 1.0, "replay": 0.0, "chat": 1.0}), (None, WEIGHTS)]
    ref = Curriculum(phases, sizes=SIZES, seed=9)
    stream = _take(ref, 1100)
    for cut in (1023, 1024, 1029, 1030, 1031):
        sampler = Curriculum(phases, sizes=SIZES, seed=9)
        _take(sampler, cut)
        fresh = Curriculum(phases, sizes=SIZES, seed=9)
        fresh.load_state_dict(sampler.state_dict())
        assert _take(fresh, 1100 - cut) == stream[cut:]


def test_deterministic_and_seed_dependent_and_dict_order_free():
    a = _take(MixtureSampler(SIZES, WEIGHTS, seed=1), 200)
    b = _take(MixtureSampler(dict(reversed(SIZES.items())), WEIGHTS, seed=1), 200)
    c = _take(MixtureSampler(SIZES, WEIGHTS, seed=2), 200)
    assert a == b and a != c


def test_proportions_match_weights():
    n = 20_000
    counts = Counter(name for name, _ in MixtureSampler(SIZES, WEIGHTS, seed=0, num_samples=n))
    assert sum(counts.values()) == n
    for name, weight in WEIGHTS.items():
        sd = math.sqrt(n * weight * (1 - weight))
        assert abs(counts[name] - n * weight) < 5 * sd, (name, counts[name])


def test_one_percent_replay():
    n = 50_000
    sampler = MixtureSampler({"domain": 100, "replay": 10}, {"domain": 99, "replay": 1},
                             seed=5, num_samples=n)
    replay = sum(name == "replay" for name, _ in sampler)
    assert abs(replay - 500) < 5 * math.sqrt(n * 0.01 * 0.99)


def test_each_epoch_is_a_fresh_permutation():
    sampler = MixtureSampler({"only": 6}, {"only": 1.0}, seed=4)
    indices = [i for _, i in _take(sampler, 18)]
    epochs = [indices[k : k + 6] for k in (0, 6, 12)]
    assert all(sorted(e) == list(range(6)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1


def test_curriculum_switches_weights_by_phase():
    phases = [(100, {"domain": 1.0, "replay": 0.0, "chat": 0.0}),
              (100, {"domain": 0.0, "replay": 0.0, "chat": 1.0})]
    sampler = Curriculum(phases, sizes=SIZES, seed=0)
    draws = list(sampler)
    assert len(draws) == len(sampler) == 200
    assert {n for n, _ in draws[:100]} == {"domain"}
    assert {n for n, _ in draws[100:]} == {"chat"}
    # The domain source's position carried on: 100 draws over 13 items = 7 full epochs + 9.
    assert sampler.state_dict()["epochs"]["domain"] == 7
    assert sampler.state_dict()["positions"]["domain"] == 9


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="weights name"):
        MixtureSampler(SIZES, {"domain": 1.0}, seed=0)
    with pytest.raises(ValueError, match="'replay' has weight 1.0 but no items"):
        MixtureSampler({"domain": 3, "replay": 0}, {"domain": 1.0, "replay": 1.0}, seed=0)
    with pytest.raises(ValueError, match="num_samples must be >= 0"):
        Curriculum([(-1, WEIGHTS), (5, WEIGHTS)], sizes=SIZES, seed=0)
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=0)
    with pytest.raises(ValueError, match="seed 1"):
        MixtureSampler(SIZES, WEIGHTS, seed=1).load_state_dict(sampler.state_dict())


def test_batches_helper():
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=0, num_samples=10)
    sizes = [len(b) for b in batches(sampler, 4)]
    assert sizes == [4, 4, 2]
    sampler = MixtureSampler(SIZES, WEIGHTS, seed=0, num_samples=10)
    assert [len(b) for b in batches(sampler, 4, drop_last=True)] == [4, 4]


def test_open_phase_lasts_until_end_phase_and_resumes_exactly():
    only_domain = {"domain": 1.0, "replay": 0.0, "chat": 0.0}
    only_replay = {"domain": 0.0, "replay": 1.0, "chat": 0.0}
    phases = [(None, only_domain), (None, only_replay)]
    sampler = Curriculum(phases, sizes=SIZES, seed=3)
    first = [next(sampler) for _ in range(30)]
    assert {name for name, _ in first} == {"domain"} and sampler.phase == 0
    sampler.end_phase()
    assert sampler.phase == 1
    state = sampler.state_dict()
    assert state["lengths"] == [30, None]
    rest = [next(sampler) for _ in range(10)]
    assert {name for name, _ in rest} == {"replay"}
    resumed = Curriculum(phases, sizes=SIZES, seed=3)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(10)] == rest
    with pytest.raises(ValueError, match="last phase"):
        sampler.end_phase()
    with pytest.raises(TypeError, match="open phase"):
        len(sampler)
