"""Tier 0/1 (fast, no Ray): bounded-staleness async rollouts (``rlsys.controller.async_rollout``).

The pure parts (buffer, sample version, group filter) on hand-built values; then the real
``train_rl`` loop of an ``RLStage`` against in-process fakes whose generations come back with
scripted per-token policy versions, so which groups are stale at which step is known by hand
and the test can check that no sample older than ``max_staleness`` reaches the learner.
"""

from __future__ import annotations

import json

import pytest
import torch

from rewards.base import Score
from rlsys.config import recipe_from_dict
from rlsys.config.load import RecipeError
from rlsys.controller.async_rollout import RolloutBuffer, fresh_groups, sample_version
from rlsys.controller.context import RunContext
from rlsys.controller.rl import RLStage, step_seed, train_rl
from rlsys.types import Completion

SEED, N, PROMPTS = 3, 2, 2


def test_buffer_is_fifo_bounded_and_remembers_the_sampler_before_its_oldest():
    buf: RolloutBuffer[str] = RolloutBuffer(2)
    assert buf.sampler_before_oldest() is None
    buf.push("a", {"drawn": 0})
    buf.push("b", {"drawn": 2})
    with pytest.raises(RuntimeError, match="full"):
        buf.push("c", {"drawn": 4})
    assert buf.sampler_before_oldest() == {"drawn": 0}
    assert buf.pop() == "a" and buf.sampler_before_oldest() == {"drawn": 2}
    assert buf.pop() == "b" and len(buf) == 0
    with pytest.raises(RuntimeError, match="empty"):
        buf.pop()
    with pytest.raises(ValueError, match="async_buffer"):
        RolloutBuffer(0)


def test_sample_version_is_the_oldest_token_else_the_launch_version():
    def c(versions):
        return Completion(0, [1], [5] * len(versions or []), "", [], "stop",
                          token_versions=versions)

    assert sample_version(c([3, 3, 4, 5]), launch_version=1) == 3
    assert sample_version(c(None), launch_version=2) == 2  # e.g. a retried shard
    assert sample_version(c([]), launch_version=2) == 2  # empty response


def test_fresh_groups_drops_whole_groups_older_than_k():
    # policy v=6, k=2: versions >= 4 are fresh; group 1 has a sample of version 3
    assert fresh_groups([5, 4, 3, 6, 6, 6], [0, 0, 1, 1, 2, 2], current=6,
                        max_staleness=2) == [True, True, False, False, True, True]
    assert fresh_groups([4, 4], [0, 0], current=6, max_staleness=1) == [False, False]
    with pytest.raises(ValueError, match="max_staleness"):
        fresh_groups([1], [0], current=1, max_staleness=0)
    with pytest.raises(ValueError, match="length"):
        fresh_groups([1, 2], [0], current=1, max_staleness=1)


# ---------------------------------------------------------------------------- the loop, faked
class FakeAsyncRollout:
    """A rollout pool whose ``generate_partial_async`` call ``i`` returns, per prompt, ``N``
    samples whose tokens carry the versions ``script[i][prompt]`` (None: the launch version,
    one token). Prompt ids ``[7, 100 * call + prompt]`` tell the trained rows apart."""

    def __init__(self, script: list[list]) -> None:
        self.script, self.calls, self.published, self.pulls = list(script), [], [], 0
        self._version = 0

    @property
    def weights_version(self) -> int:
        return self._version

    def generate_partial_async(self, prompts, *, chunk_tokens, n, temperature, top_p,
                               max_new_tokens, seed):
        plan = self.script.pop(0)
        call = len(self.calls)
        self.calls.append({"seed": seed, "version": self._version, "chunk": chunk_tokens})
        out = []
        for i in range(len(prompts)):
            # an entry: token versions, or a string of per-sample rewards ("00": all equal)
            rewards = plan[i] if isinstance(plan[i], str) else None
            versions = None if rewards else plan[i]
            versions = versions or [self._version]
            for j in range(n):
                out.append(Completion(i, [7, 100 * call + i], [10 + j] * len(versions),
                                      rewards[j] if rewards else str(j % 2),
                                      [-0.5] * len(versions), "stop",
                                      token_versions=list(versions)))
        return [out]

    def wait_shard(self, shard, **sampling):
        return shard

    def publish_weights(self, state) -> int:
        self._version += 1
        self.published.append(state)
        return self._version

    def pull_weights(self):
        self.pulls += 1
        return [self._version]


class FakeReward:
    def score_async(self, items, *, spread=True):
        return [list(items)]

    def wait(self, pending):
        return [Score(float(item.response)) for shard in pending for item in shard]


class FakePolicy:
    lora = None

    def __init__(self) -> None:
        self.trains, self.saved = [], []

    def forward(self, method, batch):
        return torch.full(batch.mask.shape, -0.4)

    def train(self, method, batch, **kwargs):
        self.trains.append(batch)
        return {"loss": 0.0}

    def weights_for_sync(self):
        return {"after_trains": len(self.trains)}

    def save_checkpoint(self, path, extra_state, *, training_state=True):
        self.saved.append((path, json.loads(json.dumps(extra_state))))

    def shutdown(self):
        pass


def _stage(tmp_path, script, *, steps, every=0, **algo):
    recipe = recipe_from_dict({
        "name": "async_unit", "seed": SEED, "model": {"path": "tiny-llama"},
        "data": {"sources": [{"name": "arith", "generator": "arithmetic",
                              "generator_kwargs": {"num": 16}, "kind": "prompt"}]},
        "rollout": {"n": N, "prompts_per_step": PROMPTS, "max_new_tokens": 4},
        "reward": {"type": "format"}, "checkpoint": {"every_n_steps": every},
        "logging": {"run_dir": str(tmp_path), "trackers": [], "progress": False, "plot": False},
        "stages": [{"name": "rl", "kind": "grpo", "steps": steps,
                    "algo": {"async_rollout": True, "tis_cap": 2.0, **algo}}]})
    ctx = RunContext(recipe, tmp_path, start_ray=False)
    return RLStage(ctx, recipe.stages[0], policy=FakePolicy(), reference=None, critic=None,
                   rollout=FakeAsyncRollout(script), reward=FakeReward(), pad_id=0)


# launches L1..L3 go out at version 0 before step 1 (buffer 3); L2's second prompt was finished
# on version 1 weights, L3's first prompt began on version 0 and ended on 2, its second ran on
# 1 and 2; L4 is launched at step 3 only if every group of L3 is stale.
SCRIPT = [[None, None], [None, [1, 1]], [[0, 2], [1, 2]], [None, None]]


@pytest.mark.parametrize("k,dropped,staleness", [
    (1, [0, 0, 2], [0.0, 1.0, 1.0]),   # step 3 (v=2): L3 prompt 0 has a version-0 token
    (2, [0, 0, 0], [0.0, 1.0, 2.0]),
])
def test_no_sample_older_than_k_is_trained_on(tmp_path, k, dropped, staleness):
    run = _stage(tmp_path, SCRIPT, steps=3, every=1, max_staleness=k, async_buffer=3)
    train_rl(run)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["async/dropped_stale"] for r in rows] == dropped
    assert [r["staleness"] for r in rows] == staleness
    assert len(run.rollout.calls) == 3 and run.rollout.script == [SCRIPT[3]]
    assert [c["version"] for c in run.rollout.calls] == [0, 0, 0]
    assert [c["seed"] for c in run.rollout.calls] == [step_seed(SEED, i) for i in (1, 2, 3)]
    assert [c["chunk"] for c in run.rollout.calls] == [4, 4, 4]  # partial off: whole response
    # the learner saw, per step (policy version = step - 1), the prompts of L1, L2, L3
    versions = {(call, p): min(v or [0]) for call, plan in enumerate(SCRIPT[:3])
                for p, v in enumerate(plan)}
    for step, batch in enumerate(run.policy.trains, start=1):
        trained = {(int(r[1]) // 100, int(r[1]) % 100) for r in batch.tokens.input_ids}
        assert {call for call, _ in trained} == {step - 1}
        assert all(step - 1 - versions[key] <= k for key in trained), (step, trained)
        assert len(trained) == PROMPTS - dropped[step - 1] // N
    # weights published after each step, pulled once at the end; no blocking sync
    assert len(run.rollout.published) == 3 and run.rollout.pulls == 1 and run.version == 3
    # checkpoints record the sampler before the prompts still in flight (L2, then L3)
    assert [extra["sampler"]["drawn"] for _, extra in run.policy.saved[:2]] == [2, 4]


def test_an_all_stale_generation_is_replaced_by_a_fresh_one(tmp_path):
    """k=1, buffer 3: at step 3 (v=2) every group of L3 is stale; the step takes L4, launched
    then on version 2, instead of training on nothing."""
    script = [[None, None], [None, None], [[0], [0]], [None, None]]
    run = _stage(tmp_path, script, steps=3, max_staleness=1, async_buffer=3)
    train_rl(run)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["async/dropped_stale"] for r in rows] == [0, 0, 4]
    assert [r["staleness"] for r in rows] == [0.0, 1.0, 0.0]
    assert [c["version"] for c in run.rollout.calls] == [0, 0, 0, 2]
    assert {int(r[1]) // 100 for r in run.policy.trains[2].tokens.input_ids} == {3}


def test_partial_rollout_chunk_reaches_the_pool_and_buffer_defaults_to_k(tmp_path):
    run = _stage(tmp_path, [[None, None]] * 2, steps=2, max_staleness=2,
                 partial_rollout_chunk=2)
    train_rl(run)
    assert [c["chunk"] for c in run.rollout.calls] == [2, 2]
    assert [c["version"] for c in run.rollout.calls] == [0, 0]  # both in flight at step 1


def test_dynamic_sampling_refills_from_the_next_generation_up_to_the_batch(tmp_path):
    """L1 has one informative group of two; the refill takes L2 (launched on demand) and keeps
    only the one group still needed, so the step trains on L1 prompt 1 and L2 prompt 0."""
    run = _stage(tmp_path, [["00", "01"], ["10", "01"]], steps=1, dynamic_sampling=True,
                 max_refill_rounds=2)
    train_rl(run)
    assert len(run.rollout.calls) == 2
    rows = run.policy.trains[0].tokens.input_ids  # shuffled by the update
    trained = sorted((int(r[1]) // 100, int(r[1]) % 100) for r in rows)
    assert trained == [(0, 1), (0, 1), (1, 0), (1, 0)]
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["samples/drawn"] == 8 and row["groups"] == 2 and row["staleness"] == 0


@pytest.mark.parametrize("algo,message", [
    ({"async_rollout": True, "max_staleness": 0}, "greater than or equal to 1"),
    ({"async_rollout": True, "max_staleness": 2}, "set tis_cap"),
    ({"max_staleness": 2, "tis_cap": 2.0}, "only used with async_rollout"),
    ({"partial_rollout_chunk": 8}, "only used with async_rollout"),
    ({"async_rollout": True, "async_buffer": 0}, "greater than or equal to 1"),
])
def test_async_fields_are_validated_with_the_field_named(algo, message):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"name": "x", "model": {"path": "tiny-llama"},
                          "data": {"sources": [{"name": "a", "generator": "arithmetic",
                                                "kind": "prompt"}]},
                          "stages": [{"name": "g", "kind": "grpo", "algo": algo}]})
    assert any(f.startswith("stages.0.algo") and message in msg
               for f, msg in info.value.errors), info.value.errors
