"""Rollout and reward pools on a real local Ray cluster: sharding, order, restarts, overlap."""

from __future__ import annotations

import pytest
import ray
import torch

from actors.launch import (
    WorkerError,
    launch_reward_workers,
    launch_rollout_workers,
    shard_bounds,
)
from actors.weight_sync import pack_state_dict
from rewards import RewardItem

# Two rollout + two reward actors must fit the fixture's 2 CPUs.
HALF_CPU = 0.5
SAMPLING = dict(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=7)


def _pings(pool) -> list[dict]:
    """Every worker's own ``ping()`` (pid, weights version), asked of the actors directly."""
    return ray.get([h.ping.remote() for h in pool.handles], timeout=120)


def test_shard_bounds_contiguous_and_balanced():
    assert shard_bounds(5, 2) == [(0, 3), (3, 5)]
    assert shard_bounds(1, 3) == [(0, 1)]
    assert shard_bounds(0, 2) == []
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]


@pytest.fixture(scope="module")
def rollout_pool(ray_cluster, tiny_model):
    pool = launch_rollout_workers(2, "hf", tiny_model, {"max_batch_size": 8, "num_threads": 1},
                                  num_cpus=HALF_CPU, timeout_s=120)
    yield pool
    pool.close()


def test_pool_shards_and_preserves_order(rollout_pool):
    prompts = [[1, 2, 3 + i] for i in range(5)]  # token-id prompts: easy to check
    out = rollout_pool.generate(prompts, **SAMPLING)
    assert [c.prompt_index for c in out] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [c.prompt_ids for c in out] == [p for p in prompts for _ in range(2)]
    pids = {p["pid"] for p in _pings(rollout_pool)}
    assert len(pids) == 2 and pids == set(rollout_pool.pids)  # two worker processes


def test_killed_worker_is_restarted_with_latest_weights(rollout_pool, tiny_model_b):
    from transformers import AutoModelForCausalLM

    learner = AutoModelForCausalLM.from_pretrained(tiny_model_b, dtype=torch.float32)
    version = rollout_pool.sync_weights(pack_state_dict(learner.state_dict()))
    assert [p["weights_version"] for p in _pings(rollout_pool)] == [version, version]
    old_pid = rollout_pool.pids[1]
    prompts = [[1, 2, 3 + i] for i in range(4)]
    expected = rollout_pool.generate(prompts, **SAMPLING)

    shards = rollout_pool.generate_async(prompts, **SAMPLING)
    ray.kill(rollout_pool.handles[1], no_restart=True)  # dies mid-run
    out = [c for s in shards for c in rollout_pool.wait_shard(s, **SAMPLING)]

    assert rollout_pool.pids[1] != old_pid
    assert _pings(rollout_pool)[1]["weights_version"] == version
    # Same seeds per shard and the same (synced) weights: the retried shard resamples the
    # same tokens with the same log-probs, which also proves the restarted worker got the
    # new weights.
    assert [c.response_ids for c in out] == [c.response_ids for c in expected]
    for c, e in zip(out, expected, strict=True):
        torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(e.logprobs),
                                   atol=1e-4, rtol=0)


def test_timeout_raises_worker_error_naming_worker_and_phase(rollout_pool):
    rollout_pool.timeout_s, saved = 0.001, rollout_pool.timeout_s
    try:
        with pytest.raises(WorkerError, match=r"rollout worker 0 \(pid \d+\).*'generate'"):
            rollout_pool.generate([[1, 2, 3]] * 4, n=4, max_new_tokens=64, seed=0)
    finally:
        rollout_pool.timeout_s = saved


def test_remote_exception_is_a_worker_error(rollout_pool):
    with pytest.raises(WorkerError, match=r"'generate'.*top_p must be in"):
        rollout_pool.generate([[1, 2]], n=1, top_p=2.0, max_new_tokens=2)


def test_reward_pool_scores_in_order_and_overlaps(ray_cluster, rollout_pool):
    pool = launch_reward_workers(2, {"name": "format", "kwargs": {"value": 2.0}},
                                 num_cpus=HALF_CPU)
    try:
        items = [RewardItem("p", r"\boxed{3}"), RewardItem("p", "none"),
                 RewardItem("p", r"\boxed{}"), RewardItem("p", r"so \boxed{x+1}")]
        assert [s.value for s in pool.score(items)] == [2.0, 0.0, 0.0, 2.0]
        assert len({p["pid"] for p in _pings(pool)}) == 2

        # The RL overlap: each generation shard is sent whole to the next reward worker
        # (round robin) as soon as it is in, while later shards still generate.
        completions, pending = [], []
        for shard in rollout_pool.generate_async([[1, 2, i] for i in range(5)], **SAMPLING):
            done = rollout_pool.wait_shard(shard, **SAMPLING)
            # Alternate boxed / plain by prompt index so the order of scores is checkable.
            items = [RewardItem("p", r"\boxed{1}" if c.prompt_index % 2 else "x") for c in done]
            pending.append(pool.score_async(items, spread=False))
            completions += done
        assert [[s.worker for s in p] for p in pending] == [[0], [1]]
        scores = [s for p in pending for s in pool.wait(p)]
        assert [c.prompt_index for c in completions] == [i for i in range(5) for _ in range(2)]
        assert [s.value for s in scores] == [2.0 * (c.prompt_index % 2) for c in completions]
    finally:
        pool.close()


def test_reward_pool_weighted_spec_and_bad_spec(ray_cluster):
    pool = launch_reward_workers(1, [{"name": "format", "weight": 0.5},
                                     {"name": "format", "weight": 0.25}], num_cpus=HALF_CPU)
    try:
        assert [s.value for s in pool.score([RewardItem("p", r"\boxed{1}")])] == [0.75]
    finally:
        pool.close()
    with pytest.raises(WorkerError, match=r"(?s)reward worker 0 .*'start'.*unknown keys"):
        launch_reward_workers(1, {"name": "format", "kwarg": {}}, num_cpus=HALF_CPU)


def test_sync_weights_helper_and_restart_on_generate(rollout_pool, tiny_model):
    from transformers import AutoModelForCausalLM

    from actors.weight_sync import sync_weights

    state = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    before = [p["weights_version"] for p in _pings(rollout_pool)]
    versions, ref = sync_weights(state, rollout_pool.handles, timeout=120)
    assert versions == [v + 1 for v in before]
    assert isinstance(ref, ray.ObjectRef)

    old_pid = rollout_pool.pids[0]
    ray.kill(rollout_pool.handles[0], no_restart=True)
    out = rollout_pool.generate([[1, 2, 3 + i] for i in range(4)], **SAMPLING)
    assert [c.prompt_index for c in out] == [i for i in range(4) for _ in range(2)]
    info = _pings(rollout_pool)[0]
    assert info["pid"] == rollout_pool.pids[0] != old_pid
    assert info["weights_version"] == rollout_pool.weights_version  # pool weights re-applied
