"""Tier 1 (fast, no Ray): the RL stage's phases against in-process fakes of the worker pools and
learner groups, with a real ``RunContext`` (no Ray), real recipe, sampler, experience math and
metrics logger.

The fake rollout pool follows a script: each generation call takes the next entry, one string
per prompt whose character ``j`` is the reward (``"0"``/``"1"``) of sample ``j``; the fake
reward pool scores a response by its text. So which groups are informative is known by hand.
The real pools and learners run in ``tests/actors``, ``tests/learner`` and the e2e recipes.
"""

from __future__ import annotations

import json

import pytest
import torch

from rewards.base import Score
from rlsys.config import recipe_from_dict
from rlsys.controller.context import RunContext
from rlsys.controller.phases import PhaseTimer
from rlsys.controller.rl import RLStage, step_seed, train_rl
from rlsys.types import Completion

SEED, N, PROMPTS, MAX_NEW = 3, 2, 4, 3
# what the fake groups' forwards return, per method (a reference group's log-probs: -0.3)
FORWARD = {"forward_logprobs": -0.1, "forward_ref_logprobs": -0.3, "forward_values": 0.5}


class FakeRollout:
    """Scripted ``RolloutPool``: one shard per call; prompt ids unique per call and prompt."""

    def __init__(self, script: list[list[str]]) -> None:
        self.script, self.calls, self.synced = list(script), [], []
        self._version = 0

    @property
    def weights_version(self) -> int:
        return self._version

    def generate_async(self, prompts, *, n, temperature, top_p, max_new_tokens, seed):
        plan = self.script.pop(0)
        assert len(plan) == len(prompts) and all(len(p) == n for p in plan)
        call = len(self.calls)
        self.calls.append({"prompts": list(prompts), "seed": seed, "version": self._version})
        return [[Completion(i, [7, 100 * call + i], [10 + j] * (j + 1), plan[i][j],
                            [-0.5] * (j + 1), "length" if j + 1 >= max_new_tokens else "stop")
                 for i in range(len(prompts)) for j in range(n)]]

    def wait_shard(self, shard, **sampling):
        return shard

    def sync_weights(self, state) -> int:
        self._version += 1
        self.synced.append(state)
        return self._version

    # async mode (rlsys.controller.async_rollout): the same script, weights published
    def generate_partial_async(self, prompts, *, chunk_tokens, **sampling):
        return self.generate_async(prompts, **sampling)

    def publish_weights(self, state) -> int:
        return self.sync_weights(state)

    def pull_weights(self):
        return [self._version]


class FakeReward:
    """``RewardPool`` scoring a response by its text ("0"/"1"); keeps every item it saw."""

    def __init__(self) -> None:
        self.items = []

    def score_async(self, items, *, spread=True):
        self.items += items
        return [list(items)]

    def wait(self, pending):
        return [Score(float(item.response)) for shard in pending for item in shard]

    def score(self, items):
        return self.wait(self.score_async(items))


class FakeLearners:
    """A learner group: forwards return ``FORWARD[method]`` (or ``values[method]``) everywhere;
    ``train`` returns its call number as the loss; calls, saves and shutdown are recorded."""

    def __init__(self, lora=None, **values) -> None:
        self.lora, self.values = lora, {**FORWARD, **values}
        self.forwards, self.trains, self.saved, self.stopped = [], [], [], False

    def forward(self, method, batch):
        self.forwards.append(method)
        return torch.full(batch.mask.shape, self.values[method])

    def train(self, method, batch, **kwargs):
        self.trains.append((method, batch, kwargs))
        return {"loss": float(len(self.trains))}

    def weights_for_sync(self):
        return {"weights": len(self.trains)}

    def save_checkpoint(self, path, extra_state, *, training_state=True):
        self.saved.append((path, dict(extra_state), training_state))
        return path

    def load_checkpoint(self, path):
        raise AssertionError("no checkpoint exists in these tests")

    def shutdown(self):
        self.stopped = True


def _stage(tmp_path, script, *, kind="grpo", steps=1, every=0, lora=False, **algo):
    recipe = recipe_from_dict({
        "name": "rl_unit", "seed": SEED, "model": {"path": "tiny-llama"},
        "data": {"sources": [{"name": "arith", "generator": "arithmetic",
                              "generator_kwargs": {"num": 16}, "kind": "prompt"}]},
        "rollout": {"n": N, "prompts_per_step": PROMPTS, "max_new_tokens": MAX_NEW},
        "reward": {"type": "format"},
        "checkpoint": {"every_n_steps": every},
        "logging": {"run_dir": str(tmp_path), "trackers": [], "progress": False, "plot": False},
        "stages": [{"name": "rl", "kind": kind, "steps": steps, "algo": algo}]})
    ctx = RunContext(recipe, tmp_path, start_ray=False)
    stage = recipe.stages[0]
    kl = stage.algo_or_default.kl_coef > 0
    reference = FakeLearners(forward_logprobs=-0.3) if kl and not lora else None
    critic = FakeLearners() if stage.estimator in ("gae", "gae_whitened") else None
    return RLStage(ctx, stage, policy=FakeLearners(lora={"r": 2} if lora else None),
                   reference=reference, critic=critic, rollout=FakeRollout(script),
                   reward=FakeReward(), pad_id=0)


def test_dynamic_sampling_drops_all_equal_groups_and_refills(tmp_path):
    run = _stage(tmp_path, [["01", "00", "11", "10"], ["00", "01"], ["10"]],
                 dynamic_sampling=True, max_refill_rounds=3)
    batch = run.collect(1, PhaseTimer())
    calls = run.rollout.calls
    # 2 informative groups of 4 -> draw 2 more (1 informative) -> draw 1 more (informative)
    assert [len(c["prompts"]) for c in calls] == [4, 2, 1]
    seed = step_seed(SEED, 1)
    assert [c["seed"] for c in calls] == [seed, seed + 7, seed + 14]
    kept = [calls[0]["prompts"][0], calls[0]["prompts"][3], calls[1]["prompts"][1],
            calls[2]["prompts"][0]]
    assert [batch.records[c.prompt_index]["prompt"] for c in batch.completions[::N]] == kept
    groups = batch.group_ids  # distinct per prompt, shared by its N samples
    assert len(set(groups)) == 4 and all(groups[i] == groups[i + 1] for i in range(0, 8, N))
    assert batch.rewards().tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
    assert len(batch.drawn_scores) == (4 + 2 + 1) * N
    # every scored item carries its own record's prompt and answer
    records = {r["prompt"]: r.get("answer") for r in run.ctx.records("arith")}
    assert all(records[item.prompt] == item.reference for item in run.reward.items)


def test_refill_stops_after_max_rounds_and_is_off_without_dynamic_sampling(tmp_path):
    run = _stage(tmp_path / "a", [["00", "00", "00", "01"], ["11", "00", "00"]],
                 dynamic_sampling=True, max_refill_rounds=1)
    batch = run.collect(1, PhaseTimer())
    assert len(run.rollout.calls) == 2 and run.rollout.script == []
    assert len(set(batch.group_ids)) == 1 and len(batch.drawn_scores) == 14

    run = _stage(tmp_path / "b", [["00", "00", "11", "01"]])
    batch = run.collect(1, PhaseTimer())
    assert len(run.rollout.calls) == 1 and len(batch.completions) == 8


def test_prepare_on_policy_uses_the_reference_group_for_kl(tmp_path):
    """One epoch, one minibatch, KL in the loss: no old log-probs (on-policy), the reference
    group gives ``ref_logprobs``. GRPO on group rewards (0, 1): mean 1/2, unbiased std
    sqrt(1/2), advantages -+ (1/2)/sqrt(1/2) = -+ sqrt(1/2) on every response token; the
    all-equal group (1, 1) gets 0."""
    run = _stage(tmp_path, [["01", "11", "10", "00"]], kl_coef=0.1, kl_mode="loss")
    exp = run.prepare(run.collect(1, PhaseTimer()), PhaseTimer())
    assert run.policy.forwards == [] and exp.old_logprobs is None
    assert run.reference.forwards == ["forward_logprobs"]
    assert torch.equal(exp.ref_logprobs, torch.full(exp.tokens.mask.shape, -0.3))
    mask = exp.tokens.mask
    per_row = [exp.advantages[i][mask[i]].unique().tolist() for i in range(8)]
    half = 0.5 ** 0.5
    expected = [-half, half, 0, 0, half, -half, 0, 0]
    for got, want in zip(per_row, expected, strict=True):
        assert got == pytest.approx([want], abs=1e-4)


def test_prepare_lora_reference_kl_in_reward_and_several_updates(tmp_path):
    """LoRA: no reference group, the policy's disabled-adapter forward is the reference. KL in
    the reward needs the old log-probs too; k1 per token = old - ref = -0.1 + 0.3 = 0.2, times
    kl_coef 0.5 = 0.1 subtracted from each response token's reward, which changes the
    advantages compared with KL in the loss."""
    script = [["01", "11", "10", "00"]]
    run = _stage(tmp_path / "r", script, lora=True, kl_coef=0.5, kl_mode="reward",
                 kl_estimator="k1")
    assert run.reference is None
    exp = run.prepare(run.collect(1, PhaseTimer()), PhaseTimer())
    assert run.policy.forwards == ["forward_logprobs", "forward_ref_logprobs"]
    assert torch.equal(exp.old_logprobs, torch.full(exp.tokens.mask.shape, -0.1))
    loss_mode = _stage(tmp_path / "l", script, lora=True, kl_coef=0.5, kl_mode="loss")
    plain = loss_mode.prepare(loss_mode.collect(1, PhaseTimer()), PhaseTimer())
    assert loss_mode.policy.forwards == ["forward_ref_logprobs"]  # on-policy: no old pass
    assert not torch.allclose(exp.advantages, plain.advantages)


def test_prepare_gets_values_from_the_critic_for_gae(tmp_path):
    run = _stage(tmp_path, [["01", "11", "10", "00"]], kind="ppo")
    exp = run.prepare(run.collect(1, PhaseTimer()), PhaseTimer())
    assert run.critic.forwards == ["forward_values"]
    assert torch.equal(exp.values, torch.full(exp.tokens.mask.shape, 0.5))


def test_update_runs_epochs_times_minibatches_over_every_row(tmp_path):
    run = _stage(tmp_path, [["01", "11", "10", "00"]], kind="ppo", ppo_epochs=2,
                 num_minibatches=2, kl_coef=0.2, kl_mode="loss")
    exp = run.prepare(run.collect(1, PhaseTimer()), PhaseTimer())
    metrics = run.update(exp, PhaseTimer())
    trains = run.policy.trains
    assert len(trains) == 4 and len(run.critic.trains) == 4
    assert {m for m, _, _ in trains} == {"train_policy"}
    assert {m for m, _, _ in run.critic.trains} == {"train_value"}
    rows = [tuple(r.tolist()) for r in exp.tokens.input_ids]
    for epoch in range(2):
        seen = [tuple(r.tolist()) for _, part, _ in trains[2 * epoch:2 * epoch + 2]
                for r in part.tokens.input_ids]
        assert sorted(seen) == sorted(rows)  # each epoch: every row once, in 2 minibatches
    for _, part, kwargs in trains:
        assert kwargs["num_seqs"] == 4 and kwargs["spec"].kl_coef == 0.2
        assert kwargs["num_tokens"] == int(part.tokens.mask.sum())
        assert kwargs["spec"] == run.loss_spec and run.loss_spec.norm_len == MAX_NEW
    # losses 1, 2, 3, 4 -> mean 2.5 (the critic's too, under its prefix)
    assert metrics == {"loss": 2.5, "critic/loss": 2.5}


@pytest.mark.parametrize("async_rollout", [False, True])
def test_train_rl_logs_syncs_checkpoints_and_closes(tmp_path, async_rollout):
    """Two steps, a checkpoint every step (not after the last): metrics rows, one sync per
    step, staleness 1 on the prefetched step of async mode, the final model saved."""
    run = _stage(tmp_path, [["01", "11", "10", "00"], ["10", "10", "00", "11"]], steps=2,
                 every=1, async_rollout=async_rollout)
    result = train_rl(run)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and {r["stage"] for r in rows} == {"rl"}
    assert [r["reward/mean"] for r in rows] == [0.5, 0.5]
    assert [r["accuracy/drawn"] for r in rows] == [0.5, 0.5]
    assert [r["staleness"] for r in rows] == ([0.0, 1.0] if async_rollout else [0.0, 0.0])
    calls = run.rollout.calls
    assert [c["seed"] for c in calls] == [step_seed(SEED, 1), step_seed(SEED, 2)]
    assert [c["version"] for c in calls] == ([0, 0] if async_rollout else [0, 1])
    assert len(run.rollout.synced) == 2 and run.version == 2
    saved = [(path, extra["step"], full) for path, extra, full in run.policy.saved]
    assert len(saved) == 2 and saved[0][1:] == (1, True)
    assert saved[0][0].startswith(str(run.dir / "ckpt"))
    assert saved[1] == (str(run.dir / "final"), 2, False)
    assert result == {"checkpoint": str(run.dir / "final")} and run.policy.stopped
    samples = (run.dir / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 8  # the first 4 samples of each step
