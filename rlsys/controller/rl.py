"""The RL stages (``grpo``, ``rloo``, ``reinforce_pp``, ``ppo``): the loop reads like the paper.

    for each step:
        prompts   <- the sampler (a resumable mixture of the stage's prompt sources)
        responses <- rollout workers sample n per prompt            (phase "generate")
        rewards   <- reward workers score them (overlapped)         (phase "reward")
        drop all-equal groups and refill (DAPO dynamic sampling, optional)
        old/ref log-probs, values <- learner groups                 (phase "logprobs")
        advantages <- ADVANTAGES[estimator] (+ KL-in-reward, overlong shaping)
        policy (and critic) update: epochs x minibatches            (phase "train")
        weights -> rollout workers                                  (phase "sync")

Async mode (``rlsys.controller.async_rollout``) keeps generations in flight while the learner
trains, drops samples more than ``max_staleness`` versions old and lets truncated IS correct
the rest. Every remote call has a timeout and names the
worker and phase on failure (``actors.launch`` / ``learner.launch``); a dead rollout or reward
worker is restarted and its shard retried there. Checkpoints every N steps; a re-run resumes
model, optimizer, sampler position and step exactly.

``RLStage`` is handed its learner groups and worker pools (``RLStage.build`` starts the real
ones), so ``collect``/``prepare``/``update`` and the loop ``train_rl`` also run in-process
against fakes. The math lives in ``rlsys.algo`` and ``experience``; this module only drives it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlsys.controller.experience import (
    build_experience,
    compute_advantages,
    informative_groups,
    overlong_penalty,
    select,
)
from rlsys.controller.generation import RewardPoolLike, RolloutPoolLike, reward_items
from rlsys.controller.learners import LearnerGroupLike, Learners, split_rows, stage_lora
from rlsys.controller.metrics import plot_curves, stage_logger, truncate_stage
from rlsys.controller.phases import PhaseTimer
from rlsys.controller.rl_batch import Batch, batch_metrics, policy_loss_spec, step_seed
from rlsys.controller.trajectories import episode_score, trajectory_row

__all__ = ["Batch", "RLStage", "batch_metrics", "policy_loss_spec", "run_rl_stage", "step_seed",
           "train_rl"]

if TYPE_CHECKING:
    from rlsys.config import StageConfig
    from rlsys.controller.context import RunContext
    from rlsys.types import Experience

#: a launched generation: pending shards, their prompt records, the policy version sampling
Pending = tuple[list[Any], list[dict], int]


class RLStage:
    """State of one RL stage: learner groups, worker pools, prompt sampler, logger.

    The learner groups and pools come in as arguments (``build`` makes the real ones from the
    run context), so the phases run against in-process fakes in tests."""

    def __init__(self, ctx: RunContext, stage: StageConfig, *, policy: LearnerGroupLike,
                 reference: LearnerGroupLike | None, critic: LearnerGroupLike | None,
                 rollout: RolloutPoolLike, reward: RewardPoolLike | None, pad_id: int) -> None:
        from rlsys.data.mixture import MixtureSampler

        self.ctx, self.stage, self.algo = ctx, stage, stage.algo_or_default
        self.rc, self.recipe = ctx.recipe.rollout, ctx.recipe
        # multi-turn: the recipe's env (episodes scored by the environment, no reward pool)
        self.env = ctx.recipe.env
        self.loss_spec = policy_loss_spec(self.algo, norm_len=self.rc.max_new_tokens
                                          if self.env is None else self.env.max_total_tokens)
        self.pad_id = pad_id
        # LoRA: the reference is the policy with its adapters disabled (``reference`` None)
        self.policy, self.reference, self.critic = policy, reference, critic
        self.rollout, self.reward = rollout, reward
        self.sources = ctx.stage_sources(stage.sources, ("prompt", "sft"))
        self.sampler = MixtureSampler({n: len(ctx.records(n)) for n in self.sources},
                                      {n: ctx.source(n).weight for n in self.sources},
                                      seed=ctx.recipe.seed)
        self.sampler_before_prefetch: dict[str, Any] | None = None
        self.transport = "object_store"  # how the last push went (``push_weights``)
        self._colocated: str | None = None  # workers on rank 0's GPU (``colocated``)
        self.dir = ctx.stage_dir(stage.name)
        self.step = self._resume()
        # steps replayed after a resume are logged again: their earlier samples go
        truncate_stage(self.dir / "samples.jsonl", None, self.step)
        self.logger = stage_logger(ctx, stage, start_step=self.step)
        # the pool's weight version, not 0: the pool outlives stages and _resume syncs it
        self.version = self.rollout.weights_version

    @classmethod
    def build(cls, ctx: RunContext, stage: StageConfig, model_path: str) -> RLStage:
        """The stage with real learner groups (policy, reference when ``kl_coef > 0`` without
        LoRA, critic for GAE) and the run's rollout and reward pools."""
        from rlsys.modeling import load_tokenizer

        algo = stage.algo_or_default
        from actors.collective_sync import resolve_weight_sync

        rc = ctx.recipe.rollout  # refuse a weight_sync the hardware cannot do before starting
        resolve_weight_sync(rc.weight_sync, learner_gpus=ctx.recipe.learner.num_gpus_per_rank,
                            rollout_gpus=rc.num_gpus_per_worker, pool_can_join=True,
                            staged=algo.async_rollout)
        pad_id = load_tokenizer(model_path).pad_token_id
        updates = stage.steps * algo.ppo_epochs * algo.num_minibatches
        lora = stage_lora(ctx.recipe, stage)
        policy = Learners(ctx.recipe, model_path, total_steps=updates, lr=stage.lr, lora=lora)
        reference = (Learners(ctx.recipe, model_path, total_steps=1, name="reference")
                     if algo.kl_coef > 0 and not lora else None)
        critic = (Learners(ctx.recipe, model_path, total_steps=updates, lr=stage.lr,
                           value_head=True, name="critic", lora=lora)
                  if stage.estimator in ("gae", "gae_whitened") else None)
        return cls(ctx, stage, policy=policy, reference=reference, critic=critic,
                   rollout=ctx.rollout_pool(model_path),
                   reward=ctx.reward_pool() if ctx.recipe.env is None else None, pad_id=pad_id)

    # ------------------------------------------------------------------ resume / checkpoint
    def _resume(self) -> int:
        from learner.checkpoint import latest_checkpoint

        latest = latest_checkpoint(self.dir / "ckpt") if self.recipe.checkpoint.resume else None
        if latest is None:
            return 0
        extra = self.policy.load_checkpoint(str(latest))
        if self.critic is not None:
            self.critic.load_checkpoint(self._critic_path(latest))
        self.sampler.load_state_dict(extra["sampler"])
        self.push_weights()  # __init__ reads the pool's new version
        print(f"[{self.stage.name}] resumed from {latest} at step {extra['step']}", flush=True)
        return int(extra["step"])

    def save(self, path: str, *, training_state: bool = True) -> None:
        """Checkpoint policy (+ critic) with the step and the sampler position.

        In async mode the prompts of the next step were already drawn (prefetched): the
        position saved is the one before that draw, so a resume re-draws them."""
        sampler = self.sampler_before_prefetch or self.sampler.state_dict()
        extra = {"step": self.step, "sampler": sampler}
        if self.critic is not None:  # the critic first: the policy dir marks completeness
            self.critic.save_checkpoint(self._critic_path(path), extra,
                                        training_state=training_state)
        self.policy.save_checkpoint(path, extra, training_state=training_state)

    def _critic_path(self, policy_path: str | Path) -> str:
        """The critic's checkpoint beside a policy checkpoint: ``ckpt/...`` -> ``critic/...``."""
        path = Path(policy_path)
        try:
            return str(self.dir / "critic" / path.relative_to(self.dir / "ckpt"))
        except ValueError:
            return str(self.dir / "critic" / path.name)

    # ------------------------------------------------------------------ the phases
    def draw_prompts(self, count: int) -> list[dict]:
        """The next ``count`` prompt records from the mixture."""
        return [self.ctx.records(name)[i] for name, i in
                (next(self.sampler) for _ in range(count))]

    def start_generation(self, records: list[dict], seed: int) -> Pending:
        """Launch sampling of ``n`` responses (multi-turn: episodes) per prompt: pending
        shards, records, and the policy version generating them."""
        if self.env is not None:
            return (self.rollout.episodes_async(records, seed=seed, **self.sampling()),
                    records, self.version)
        pending = self.rollout.generate_async(
            [r["prompt"] for r in records], seed=seed, **self.sampling())
        return pending, records, self.version

    def sampling(self) -> dict[str, Any]:
        """The rollout keywords of a shard (also what a retried shard is re-sent with)."""
        common = dict(n=self.rc.n, temperature=self.rc.temperature, top_p=self.rc.top_p)
        if self.env is not None:
            return {**common, "env": self.env.model_dump()}
        return {**common, "max_new_tokens": self.rc.max_new_tokens}

    def finish_generation(self, pending: list, records: list[dict], version: int,
                          timer: PhaseTimer) -> Batch:
        """Wait for each generation shard and score it as soon as it lands (overlap)."""
        sampling = self.sampling()
        completions, score_refs = [], []
        with timer("generate"):
            if self.env is not None or self.reward is None:  # the environment scored them
                completions = [c for shard in pending
                               for c in self.rollout.wait_episodes(shard, **sampling)]
                return Batch(completions, [episode_score(c) for c in completions], records,
                             version)
            for shard in pending:
                done = self.rollout.wait_shard(shard, **sampling)
                score_refs.append(self.reward.score_async(reward_items(records, done),
                                                          spread=False))
                completions += done
        with timer("reward"):
            scores = [s for refs in score_refs for s in self.reward.wait(refs)]
        return Batch(completions, scores, records, version)

    def collect(self, step: int, timer: PhaseTimer, pending: Pending | None = None) -> Batch:
        """Generate + score one batch; with dynamic sampling drop uninformative groups and
        refill up to ``max_refill_rounds`` times."""
        seed = step_seed(self.recipe.seed, step)
        pending = pending or self.start_generation(self.draw_prompts(self.rc.prompts_per_step),
                                                   seed)
        batch = self.finish_generation(*pending, timer)
        if not self.algo.dynamic_sampling:
            return batch
        batch = batch.keep(informative_groups(batch.rewards(), torch.tensor(batch.group_ids)))
        for round_ in range(self.algo.max_refill_rounds):
            groups = len(set(batch.group_ids))
            if groups >= self.rc.prompts_per_step:
                break
            more = self.finish_generation(*self.start_generation(
                self.draw_prompts(self.rc.prompts_per_step - groups), seed + 7 * (round_ + 1)),
                timer)
            batch.extend(more.keep(informative_groups(more.rewards(),
                                                      torch.tensor(more.group_ids))))
        return batch

    def prepare(self, batch: Batch, timer: PhaseTimer) -> Experience:
        """Experience with old/ref log-probs, values, and advantages."""
        algo = self.algo
        exp = build_experience(batch.completions, batch.rewards().tolist(),
                               group_ids=batch.group_ids, pad_id=self.pad_id)
        lengths = exp.tokens.mask.sum(dim=1)
        shaping = overlong_penalty(lengths, max_new_tokens=self.rc.max_new_tokens,
                                   buffer=algo.overlong_buffer, penalty=algo.overlong_penalty)
        with timer("logprobs"):
            need_old = (algo.ppo_epochs * algo.num_minibatches > 1 or algo.tis_cap is not None
                        or algo.kl_mode == "reward" and algo.kl_coef > 0)
            if need_old:  # else on-policy: the learner uses its own detached log-probs
                exp.old_logprobs = self.policy.forward("forward_logprobs", exp.tokens)
            if self.reference is not None:
                exp.ref_logprobs = self.reference.forward("forward_logprobs", exp.tokens)
            elif algo.kl_coef > 0:  # LoRA: the same model with its adapters disabled
                exp.ref_logprobs = self.policy.forward("forward_ref_logprobs", exp.tokens)
            if self.critic is not None:
                exp.values = self.critic.forward("forward_values", exp.tokens)
        kl_reward = algo.kl_coef if algo.kl_mode == "reward" else 0.0
        return compute_advantages(exp, estimator=self.stage.estimator, gamma=algo.gamma,
                                  lam=algo.lam, norm_std=algo.norm_std, kl_coef=kl_reward,
                                  kl_estimator=algo.kl_estimator, extra_rewards=shaping)

    def update(self, exp: Experience, timer: PhaseTimer) -> dict[str, float]:
        """PPO epochs x minibatches of policy (and critic) steps; mean metrics."""
        algo, rows = self.algo, exp.tokens.input_ids.shape[0]
        totals: dict[str, float] = {}
        count = 0
        with timer("train"):
            for epoch in range(algo.ppo_epochs):
                order = torch.randperm(rows, generator=torch.Generator().manual_seed(
                    self.step * 31 + epoch))
                for mb in split_rows(rows, -(-rows // algo.num_minibatches), 1)[0]:
                    part = select(exp, order[mb.start:mb.stop])
                    metrics = self.policy.train(
                        "train_policy", part, spec=self.loss_spec,
                        num_tokens=int(part.tokens.mask.sum()),
                        num_seqs=part.tokens.input_ids.shape[0])
                    if self.critic is not None:
                        vm = self.critic.train("train_value", part, clip=algo.value_clip,
                                               num_tokens=int(part.tokens.mask.sum()))
                        metrics.update({f"critic/{k}": v for k, v in vm.items()})
                    for k, v in metrics.items():
                        totals[k] = totals.get(k, 0.0) + float(v)
                    count += 1
        return {k: v / count for k, v in totals.items()}

    def log_samples(self, batch: Batch, count: int = 4) -> None:
        """Append the first ``count`` samples of the step (prompt, response, reward, answer) to
        ``stages/NAME/samples.jsonl`` so a run can be inspected, not just its averages."""
        import json

        with (self.dir / "samples.jsonl").open("a") as f:
            for c, score in list(zip(batch.completions, batch.scores, strict=True))[:count]:
                record = batch.records[c.prompt_index]
                if c.trajectory is not None:  # multi-turn: the whole episode
                    f.write(json.dumps({"step": self.step, **trajectory_row(c, record)}) + "\n")
                    continue
                f.write(json.dumps({"step": self.step, "prompt": record["prompt"],
                                    "response": c.text, "answer": record.get("answer"),
                                    "reward": score.value, "error": score.error,
                                    "finish_reason": c.finish_reason}) + "\n")

    def weight_transport(self, staged: bool = False) -> tuple[str, str | None, bool]:
        """How weights reach the rollout workers, as ``rollout.weight_sync`` resolves
        (``actors.collective_sync.resolve_weight_sync``): ``("collective", backend,
        into_engine)`` -- learner rank 0 broadcasts, never via the driver; ``into_engine``: full
        weights go straight into engines that join the group themselves (vLLM workers), not
        for adapters nor when ``staged`` beside a generation (async) -- or ``("object_store",
        None, False)``."""
        from actors.collective_sync import resolve_weight_sync

        pool = self.rollout  # a real RolloutPool can also sync_collective
        into_engine = not self.policy.lora and not staged and self.rc.engine == "vllm"
        transport, backend = resolve_weight_sync(
            self.rc.weight_sync, learner_gpus=self.recipe.learner.num_gpus_per_rank,
            rollout_gpus=self.rc.num_gpus_per_worker, engine=self.rc.engine,
            into_engine=into_engine, staged=staged, colocated=self.colocated(),
            pool_can_join=hasattr(pool, "sync_collective") and hasattr(self.policy, "send_weights"))
        return transport, backend, into_engine and transport == "collective"

    def colocated(self) -> str:
        """How many rollout workers share learner rank 0's GPU (``actors.collective_sync
        .colocation``), asked once per stage and only when both sides hold GPUs."""
        if self._colocated is None:
            from actors.collective_sync import colocation

            pool: Any = self.rollout  # a real RolloutPool / Learners answer gpu_uuid(s)
            policy: Any = self.policy
            on_gpus = self.recipe.learner.num_gpus_per_rank and self.rc.num_gpus_per_worker
            self._colocated = colocation(policy.gpu_uuid(), pool.gpu_uuids()) \
                if on_gpus and hasattr(pool, "gpu_uuids") and hasattr(policy, "gpu_uuid") \
                else "none"
        return self._colocated

    def push_weights(self) -> int:
        """Load the policy's weights (LoRA: the adapter only) into every rollout worker now,
        over ``weight_transport()``; returns the pool's new version."""
        transport, backend, into_engine = self.weight_transport()
        self.transport = transport
        pool: Any = self.rollout
        if transport == "collective":
            return pool.sync_collective(self.policy, backend=backend, into_engine=into_engine,
                                        bucket_bytes=int(self.rc.weight_sync_bucket_mb * 2**20))
        if transport == "ipc":  # a colocated learner: CUDA-IPC handles, the GPU buffers shared
            return pool.sync_ipc(self.policy)
        return pool.sync_weights(self.policy.weights_for_sync())

    def sync(self, timer: PhaseTimer) -> None:
        """Push the updated policy weights to the rollout workers (``push_weights``)."""
        with timer("sync"):
            self.version = self.push_weights()
        self.ctx.mark_rollout_weights(f"{self.stage.name}@{self.step}")

    def close(self) -> dict[str, Any]:
        """Save the final model, write curves, stop the learner groups."""
        final = str(self.dir / "final")
        self.save(final, training_state=False)  # the model; resumes use ckpt/step_N
        for group in (self.policy, self.reference, self.critic):
            if group is not None:
                group.shutdown()
        self.logger.close(final_model=final)
        if self.recipe.logging.plot:
            plot_curves(self.ctx.run_dir, self.stage.name,
                        ["reward/mean", "accuracy/drawn", "response_length/mean", "kl"],
                        self.ctx.run_dir / f"{self.stage.name}_curves.png")
        # LoRA: the workers hold base + adapter; the next stage's adapters must start from the
        # merged model, so the next use of the pool re-sends `final` in full.
        self.ctx.mark_rollout_weights(f"{final} + adapter" if self.policy.lora else final)
        return {"checkpoint": final}




def run_rl_stage(ctx: RunContext, stage: StageConfig, model_path: str) -> dict[str, Any]:
    """Run an RL stage for ``stage.steps`` steps (resuming if a checkpoint exists)."""
    return train_rl(RLStage.build(ctx, stage, model_path))


def train_rl(run: RLStage) -> dict[str, Any]:
    """The step loop of an RL stage over ``run`` (its groups and pools already started):
    collect, prepare, update, sync, log, checkpoint; then ``run.close()``."""
    ctx, stage = run.ctx, run.stage
    every = ctx.recipe.checkpoint.every_n_steps
    feed = None
    if run.algo.async_rollout:  # generations stay in flight while the learner trains
        from rlsys.controller.async_rollout import AsyncFeed

        feed = AsyncFeed(run, seed_for=lambda i: step_seed(ctx.recipe.seed, i))
    while run.step < stage.steps:
        timer, t0 = PhaseTimer(), time.monotonic()
        batch = feed.next_batch(timer) if feed else run.collect(run.step + 1, timer)
        run.step += 1
        if not batch.completions:
            run.logger.note(f"[{stage.name}] step {run.step}: no informative group; skipped")
            continue
        run.log_samples(batch)
        exp = run.prepare(batch, timer)
        metrics = {**batch_metrics(batch, exp), **run.update(exp, timer)}
        metrics["staleness"] = float(run.version - batch.version)
        if feed:
            metrics.update(feed.metrics(batch))
            feed.sync(timer)
        else:
            run.sync(timer)
        # 1: learner rank 0 broadcast the weights (driver-free); 0: through the object store
        metrics["sync/collective"] = float(run.transport == "collective")
        step_s = time.monotonic() - t0
        generated = float(exp.tokens.mask.sum())
        metrics.update(timer.metrics(step_s))
        metrics.update({"time/step_s": step_s,
                        "tokens_per_s": generated / max(timer.seconds.get("generate", 0), 1e-9)})
        run.logger.log(run.step, metrics, show=("reward/mean", "accuracy/drawn", "time/step_s"))
        if every and run.step % every == 0 and run.step < stage.steps:
            from learner.checkpoint import checkpoint_dir, prune_checkpoints

            run.save(str(checkpoint_dir(run.dir / "ckpt", run.step)))
            prune_checkpoints(run.dir / "ckpt", ctx.recipe.checkpoint.keep_last)
            prune_checkpoints(run.dir / "critic", ctx.recipe.checkpoint.keep_last)
    if feed:
        feed.close()
    return run.close()
