"""Tier 1: partial rollouts on a real rollout worker (the HF engine, the tiny random Llama).

``RolloutWorker.generate_partial`` generates in chunks and loads newer weights between them; a
hand-built weights source hands out perturbed weights (version 1) after the first chunk, so
the expected per-token versions are known: the first chunk's tokens are version 0, the rest
version 1. Each token's log-prob must be the one of the weights that generated it (teacher-
forced under those weights), which is what truncated IS needs. The Ray side (publish without
waiting, workers pulling from the board) runs on a real one-worker pool.
"""

from __future__ import annotations

import pytest
import torch

from actors.rollout import RolloutWorker

CHUNK, MAX_NEW = 3, 8
PROMPTS = ["1 + 1 =", "Name a colour:"]


class OneUpdate:
    """A weights source: ``payload`` as version 1 from call ``at`` on (counting calls)."""

    def __init__(self, payload, at: int) -> None:
        self.payload, self.at, self.calls = payload, at, []

    def __call__(self, known: int):
        self.calls.append(known)
        return (1, self.payload) if len(self.calls) >= self.at and known < 1 else None


@pytest.fixture(scope="module")
def worker(tiny_model_dir):
    w = RolloutWorker("hf", tiny_model_dir, engine_kwargs={"dtype": "float32"})
    yield w
    w.close()


def _perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in state.items()}


def _new_then_old_logprobs(worker, completions, original):
    """Teacher-forced log-probs of the completions under the worker's current (new) weights,
    then under ``original`` (loaded back as version 0)."""
    prompt_ids = [c.prompt_ids for c in completions]
    response_ids = [c.response_ids for c in completions]
    under_new = worker.score_logprobs(prompt_ids, response_ids)
    worker.update_weights(original, 0)
    return under_new, worker.score_logprobs(prompt_ids, response_ids)


def test_tokens_after_an_update_carry_the_new_version_and_its_logprobs(worker):
    original = {k: v.clone() for k, v in worker.engine.state_dict().items()}
    new = _perturbed(original)
    source = OneUpdate(new, at=2)  # call 1: before chunk 1 (nothing), call 2: before chunk 2
    out = worker.generate_partial(PROMPTS, weights_source=source, chunk_tokens=CHUNK, n=2,
                                  temperature=1.0, max_new_tokens=MAX_NEW, seed=5,
                                  stop_token_ids=[])
    assert worker.weights_version == 1 and source.calls[:2] == [0, 0]
    assert len(out) == 4 and [c.prompt_index for c in out] == [0, 0, 1, 1]
    longs = [c for c in out if len(c.response_ids) > CHUNK]
    assert longs, "every sample stopped in the first chunk: nothing to check"
    for c in out:
        k = len(c.response_ids)
        assert len(c.logprobs) == k and c.token_versions == [0] * min(k, CHUNK) + [1] * (k - CHUNK)
        assert c.finish_reason == ("length" if k == MAX_NEW else "stop")
    under_new, under_old = _new_then_old_logprobs(worker, longs, original)
    for c, lp_new, lp_old in zip(longs, under_new, under_old, strict=True):
        got = torch.tensor(c.logprobs)
        want = torch.tensor(lp_old[:CHUNK] + lp_new[CHUNK:])
        assert torch.allclose(got, want, atol=1e-3), (got, want)
        # the perturbation matters: the old weights' log-probs of the later tokens differ
        assert (got[CHUNK:] - torch.tensor(lp_old[CHUNK:])).abs().max() > 1e-2


def test_without_updates_a_chunked_generation_is_one_version(worker):
    worker.update_weights(worker.engine.state_dict(), 0)
    out = worker.generate_partial(PROMPTS, weights_source=None, chunk_tokens=2, n=1,
                                  temperature=0.0, max_new_tokens=6)
    whole = worker.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=6)
    assert [c.response_ids for c in out] == [c.response_ids for c in whole]  # greedy: same
    assert all(c.token_versions == [0] * len(c.response_ids) for c in out)
    assert [c.text for c in out] == [c.text for c in whole]
    with pytest.raises(ValueError, match="chunk_tokens"):
        worker.generate_partial(PROMPTS, weights_source=None, chunk_tokens=0)


def test_pool_publishes_without_waiting_and_workers_pull(ray_cluster, tiny_model_dir):
    from actors.launch import RolloutPool

    pool = RolloutPool(1, "hf", tiny_model_dir, engine_kwargs={"dtype": "float32"},
                       timeout_s=300)
    try:
        state = _perturbed(RolloutWorker("hf", tiny_model_dir).engine.state_dict())
        assert pool.publish_weights(state) == 1 and pool.weights_version == 1
        shards = pool.generate_partial_async(PROMPTS, chunk_tokens=2, n=2, temperature=1.0,
                                             max_new_tokens=4, seed=1)
        done = [c for s in shards for c in pool.wait_shard(s, n=2, max_new_tokens=4)]
        assert len(done) == 4
        assert all(c.token_versions == [1] * len(c.response_ids) for c in done)
        assert pool.publish_weights(state) == 2 and pool.pull_weights() == [2]
    finally:
        pool.close()


def test_async_episodes_load_new_weights_between_turns(worker):
    """``run_episodes_partial``: new weights offered after turn 1 are loaded before turn 2
    (the HF engine's kept turn KV from the old weights is not reused); every generated token's
    log-prob is the one of the weights its ``token_versions`` names."""
    from rlsys.envs import ENVS
    from tests.actors.test_episodes import Countdown

    if "countdown_partial" not in ENVS.names():
        ENVS.register("countdown_partial", Countdown)
    original = {k: v.clone() for k, v in worker.engine.state_dict().items()}
    worker.update_weights(original, 0)
    source = OneUpdate(_perturbed(original), at=2)  # call 2 is before turn 2
    env = {"type": "countdown_partial", "max_turns": 3, "max_tokens_per_turn": 4,
           "max_total_tokens": 512}
    out = worker.run_episodes_partial([{"q": "count"}], weights_source=source, env=env, n=2,
                                      temperature=1.0, seed=3, stop_token_ids=[])
    assert worker.weights_version == 1 and len(source.calls) == 3
    under_new, under_old = _new_then_old_logprobs(worker, out, original)
    for c, lp_new, lp_old in zip(out, under_new, under_old, strict=True):
        assert c.trajectory["num_turns"] == 3
        versions = c.token_versions
        assert versions is not None and len(versions) == len(c.response_ids)
        first_end = versions.index(1)
        assert first_end > 0 and set(versions[first_end:]) == {1}
        generated = [i for i, m in enumerate(c.loss_mask) if m]
        want = [lp_old[i] if versions[i] == 0 else lp_new[i] for i in generated]
        got = [c.logprobs[i] for i in generated]
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-3), (got, want)
        later = [i for i in generated if versions[i] == 1]
        assert max(abs(c.logprobs[i] - lp_old[i]) for i in later) > 1e-2
