"""The supervised stages: ``cpt`` and ``sft`` (masked NLL, packed rows) and ``dpo`` (preference
pairs against frozen reference log-probs), each on a learner group with checkpoints and exact
resume (model, optimizer, scheduler, RNG and the data sampler's position).

The data side (encoding, masking, packing, mixing) lives in ``rlsys.data``; the math in
``rlsys.algo`` via the learner. This module only drives the loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rlsys.controller.learners import Learners, stage_lora
from rlsys.controller.metrics import plot_curves, stage_logger
from rlsys.data.sources import DataError

if TYPE_CHECKING:
    from rlsys.config import StageConfig
    from rlsys.controller.context import RunContext


def encode_sources(ctx: RunContext, names: list[str], kind: str, tokenizer: Any) -> dict[str, list]:
    """Encode every record of each source for the stage ``kind`` (cpt/sft/dpo/rm) with
    ``rlsys.data.dataset.encode_records``; truncations are reported, errors name the source."""
    from rlsys.data.dataset import drop_identical_pairs, encode_records

    dc, system = ctx.recipe.data, ctx.recipe.model.system_prompt
    out: dict[str, list] = {}
    for name in names:
        src_kind = "pair" if kind in ("dpo", "rm") else ctx.source(name).kind
        records = ctx.records(name)
        if src_kind == "pair":
            records, same = drop_identical_pairs(records)
            if same:
                print(f"[data] {name}: skipped {same} pair(s) whose chosen equals rejected",
                      flush=True)
            if not records:
                raise DataError(f"data source {name!r}: every pair has chosen == rejected")
        try:
            encoded, stats = encode_records(
                records, tokenizer, kind="text" if src_kind == "text" else src_kind,
                mask_mode="none" if kind == "cpt" else dc.mask_mode, max_len=dc.max_len,
                system=system)
        except ValueError as err:
            raise DataError(f"data source {name!r}: {err}") from None
        if stats.truncated:
            print(f"[data] {name}: {stats.truncated}/{len(encoded)} example(s) truncated to "
                  f"{dc.max_len} tokens", flush=True)
        out[name] = encoded
    return out


def _sampler(ctx: RunContext, stage: StageConfig, encoded: dict[str, list]):
    """The stage's sampler: the sources' weights, or the stage's curriculum phases (step
    bounds become draw counts; token bounds stay open until ``_StageRun`` ends them)."""
    from rlsys.data.mixture import Curriculum, MixtureSampler

    sizes = {n: len(v) for n, v in encoded.items()}
    curriculum = getattr(stage, "curriculum", None)
    if not curriculum:
        weights = {n: ctx.source(n).weight for n in encoded}
        return MixtureSampler(sizes, weights, seed=ctx.recipe.seed)
    phases, done = [], 0
    for phase in curriculum:
        weights = {n: float(phase.weights.get(n, 0.0)) for n in encoded}
        draws = None
        if phase.until_step is not None:
            draws, done = (phase.until_step - done) * stage.batch_size, phase.until_step
        phases.append((draws, weights))
    return Curriculum(phases, sizes=sizes, seed=ctx.recipe.seed)


def _sft_rows(docs: list, ctx: RunContext, pad_id: int):
    from rlsys.data.dataset import collate_examples

    dc = ctx.recipe.data
    return collate_examples(docs, pad_id=pad_id,
                            max_tokens=dc.max_tokens_per_row if dc.packing else None)


class _StageRun:
    """Shared setup of a supervised stage: learners, sampler, logger, resume."""

    def __init__(self, ctx: RunContext, stage: StageConfig, model_path: str,
                 sources: list[str]) -> None:
        from rlsys.modeling import load_tokenizer

        self.ctx, self.stage = ctx, stage
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.encoded = encode_sources(ctx, sources, stage.kind, self.tokenizer)
        self.sampler = _sampler(ctx, stage, self.encoded)
        self.tokens = 0  # real tokens trained on so far (token-bounded curriculum phases)
        self.dir = ctx.stage_dir(stage.name)
        self.learners = Learners(ctx.recipe, model_path, total_steps=stage.steps, lr=stage.lr,
                                 lora=stage_lora(ctx.recipe, stage))
        self.start_step = self._resume()
        self.logger = stage_logger(ctx, stage, start_step=self.start_step)

    def _resume(self) -> int:
        from learner.checkpoint import latest_checkpoint

        if not self.ctx.recipe.checkpoint.resume:
            return 0
        latest = latest_checkpoint(self.dir / "ckpt")
        if latest is None:
            return 0
        extra = self.learners.load_checkpoint(str(latest))
        self.sampler.load_state_dict(extra["sampler"])
        self.tokens = int(extra.get("tokens", 0))
        print(f"[{self.stage.name}] resumed from {latest} at step {extra['step']}", flush=True)
        return int(extra["step"])

    def draw(self) -> list:
        """The next ``batch_size`` encoded examples from the mixture."""
        return [self.encoded[name][i] for name, i in
                (next(self.sampler) for _ in range(self.stage.batch_size))]

    def count_tokens(self, step: int, tokens: int, phase: int | None) -> None:
        """Add the step's real tokens (its data came from curriculum ``phase``); end a
        token-bounded phase whose budget is spent, and say when the next phase starts."""
        phases = getattr(self.stage, "curriculum", None)
        if not phases or phase is None:
            return
        self.tokens += tokens
        bound = phases[phase].until_tokens
        if bound is not None and self.tokens >= bound and self.sampler.phase == phase:
            self.sampler.end_phase()
        nxt = self.sampler.phase
        if nxt is not None and nxt != phase and step < self.stage.steps:
            print(f"[{self.stage.name}] curriculum phase {nxt + 1}/{len(phases)} from step "
                  f"{step + 1} ({self.tokens} tokens trained)", flush=True)

    def after_step(self, step: int) -> None:
        """Checkpoint every N steps (atomic; old ones pruned)."""
        every = self.ctx.recipe.checkpoint.every_n_steps
        if every and step % every == 0 and step < self.stage.steps:
            self.save(step)

    def save(self, step: int) -> str:
        """Checkpoint at ``step`` with the sampler position."""
        from learner.checkpoint import checkpoint_dir, prune_checkpoints

        path = str(checkpoint_dir(self.dir / "ckpt", step))
        self.learners.save_checkpoint(path, {"step": step, "tokens": self.tokens,
                                             "sampler": self.sampler.state_dict()})
        prune_checkpoints(self.dir / "ckpt", self.ctx.recipe.checkpoint.keep_last)
        return path

    def finish(self, keys: list[str]) -> dict[str, Any]:
        """Save the final model, plot curves, stop the learners."""
        final = str(self.dir / "final")
        self.learners.save_checkpoint(final, {"step": self.stage.steps,
                                              "sampler": self.sampler.state_dict()},
                                      training_state=False)
        self.learners.shutdown()
        self.logger.close(final_model=final)
        if self.ctx.recipe.logging.plot:
            plot_curves(self.ctx.run_dir, self.stage.name, keys,
                        self.ctx.run_dir / f"{self.stage.name}_curves.png")
        return {"checkpoint": final}


def run_sft_stage(ctx: RunContext, stage: StageConfig, model_path: str) -> dict[str, Any]:
    """``cpt``/``sft``: ``stage.steps`` optimizer steps of masked NLL on packed rows."""
    kinds = ("text", "sft") if stage.kind == "cpt" else ("sft", "text")
    run = _StageRun(ctx, stage, model_path, ctx.stage_sources(stage.sources, kinds))
    for step in range(run.start_step + 1, stage.steps + 1):
        t0 = time.monotonic()
        phase = run.sampler.phase  # the curriculum phase this step's data comes from
        docs = run.draw()
        rows = _sft_rows(docs, ctx, run.pad_id)
        num_tokens = int(rows.mask.sum())
        metrics = run.learners.train("train_sft", rows, num_tokens=num_tokens,
                                     num_seqs=len(docs))
        dt = time.monotonic() - t0
        real = sum(len(d) for d in docs)
        run.logger.log(step, {"loss": metrics["loss"], "lr": metrics["lr"],
                              "grad_norm": metrics["grad_norm"], "tokens": real,
                              "tokens_per_s": real / dt, "time/step_s": dt,
                              **({"curriculum/phase": phase} if stage.curriculum else {})},
                       show=("loss", "tokens_per_s"))
        run.count_tokens(step, real, phase)
        run.after_step(step)
    return run.finish(["loss", "tokens_per_s"])


def _pair_rows(pairs: list, pad_id: int):
    from rlsys.data.packing import collate_padded

    chosen = collate_padded([c for c, _ in pairs], pad_id)
    rejected = collate_padded([r for _, r in pairs], pad_id)
    return chosen, rejected


def run_dpo_stage(ctx: RunContext, stage: StageConfig, model_path: str) -> dict[str, Any]:
    """``dpo``: reference log-probs from the stage's starting weights (computed per batch by a
    frozen reference group), then DPO/IPO/cDPO steps."""
    from rlsys.config.schema import DPOConfig

    opts = stage.dpo or DPOConfig()
    run = _StageRun(ctx, stage, model_path, ctx.stage_sources(stage.sources, ("pair",)))
    # LoRA: the reference is the policy with its adapters disabled (no second group)
    lora = run.learners.lora
    reference = run.learners if lora else Learners(ctx.recipe, model_path, total_steps=1,
                                                   name="reference")
    method = "forward_ref_sequence_logps" if lora else "forward_sequence_logps"
    try:
        for step in range(run.start_step + 1, stage.steps + 1):
            t0 = time.monotonic()
            chosen, rejected = _pair_rows(run.draw(), run.pad_id)
            ref_c = reference.forward(method, chosen)
            ref_r = reference.forward(method, rejected)
            shards = _dpo_shards(run.learners, chosen, rejected, ref_c, ref_r)
            metrics = run.learners.train_micro("train_dpo", shards, loss=opts.loss,
                                               beta=opts.beta,
                                               label_smoothing=opts.label_smoothing,
                                               num_pairs=chosen.input_ids.shape[0])
            metrics["time/step_s"] = time.monotonic() - t0
            run.logger.log(step, metrics, show=("loss", "rewards/margin"))
            run.after_step(step)
    finally:
        if not lora:
            reference.shutdown()
    return run.finish(["loss", "rewards/margin", "rewards/accuracy"])


def _dpo_shards(learners: Learners, chosen, rejected, ref_c, ref_r) -> list[list]:
    from rlsys.controller.learners import split_rows, take_rows

    plan = split_rows(chosen.input_ids.shape[0], learners.micro_batch_size,
                      learners.world_size)
    return [[(take_rows(chosen, r), take_rows(rejected, r), ref_c[r.start:r.stop],
              ref_r[r.start:r.stop]) for r in rank] for rank in plan]
