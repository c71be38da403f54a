"""The supervised stages: ``cpt`` and ``sft`` (masked NLL, packed rows) and ``dpo`` (preference
pairs against frozen reference log-probs), each on a learner group with checkpoints and exact
resume (model, optimizer, scheduler, RNG and the data sampler's position).

The data side (encoding, masking, packing, mixing) lives in ``rlsys.data``; the math in
``rlsys.algo`` via the learner. This module only drives the loop.
"""

from __future__ import annotations

import time
from typing import Any

from rlsys.controller.learners import Learners
from rlsys.controller.metrics import plot_curves, stage_logger


def _with_system(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    """Prepend the recipe's system prompt to a prompt/response record (as messages)."""
    if not system or "messages" in record or "prompt" not in record:
        return record
    return {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": record["prompt"]},
                         {"role": "assistant", "content": record["response"]}]}


def encode_sources(ctx: Any, names: list[str], kind: str, tokenizer: Any) -> dict[str, list]:
    """Encode every record of each source for ``kind`` (cpt/sft/dpo); truncations are reported."""
    from rlsys.data.encode import encode_pair, encode_sft, encode_text

    dc, system = ctx.recipe.data, ctx.recipe.model.system_prompt
    out: dict[str, list] = {}
    for name in names:
        src = ctx.source(name)
        encoded = []
        for rec in ctx.records(name):
            if kind == "dpo":
                if "prompt" in rec and system and isinstance(rec["prompt"], str):
                    rec = {**rec, "prompt": [{"role": "system", "content": system},
                                             {"role": "user", "content": rec["prompt"]}]}
                encoded.append(encode_pair(tokenizer, rec, dc.max_len))
            elif src.kind == "text":
                encoded.append(encode_text(tokenizer, rec["text"], dc.max_len))
            else:
                encoded.append(encode_sft(tokenizer, _with_system(rec, system),
                                          mask_mode="none" if kind == "cpt" else dc.mask_mode,
                                          max_len=dc.max_len))
        cut = sum(any(e.truncated for e in (x if isinstance(x, tuple) else (x,)))
                  for x in encoded)
        if cut:
            print(f"[data] {name}: {cut}/{len(encoded)} example(s) truncated to "
                  f"{dc.max_len} tokens", flush=True)
        out[name] = encoded
    return out


def _sampler(ctx: Any, stage: Any, encoded: dict[str, list]):
    from rlsys.data.mixture import MixtureSampler

    weights = {n: ctx.source(n).weight for n in encoded}
    return MixtureSampler({n: len(v) for n, v in encoded.items()}, weights,
                          seed=ctx.recipe.seed)


def _sft_rows(docs: list, ctx: Any, pad_id: int):
    from rlsys.data.packing import collate_packed, collate_padded, pack

    dc = ctx.recipe.data
    if dc.packing:
        return collate_packed(docs, pack(docs, dc.max_tokens_per_row), dc.max_tokens_per_row,
                              pad_id)
    return collate_padded(docs, pad_id)


class _StageRun:
    """Shared setup of a supervised stage: learners, sampler, logger, resume."""

    def __init__(self, ctx: Any, stage: Any, model_path: str, sources: list[str]) -> None:
        from rlsys.modeling import load_tokenizer

        self.ctx, self.stage = ctx, stage
        self.tokenizer = load_tokenizer(model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.encoded = encode_sources(ctx, sources, stage.kind, self.tokenizer)
        self.sampler = _sampler(ctx, stage, self.encoded)
        self.dir = ctx.stage_dir(stage.name)
        self.learners = Learners(ctx.recipe, model_path, total_steps=stage.steps, lr=stage.lr)
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
        print(f"[{self.stage.name}] resumed from {latest} at step {extra['step']}", flush=True)
        return int(extra["step"])

    def draw(self) -> list:
        """The next ``batch_size`` encoded examples from the mixture."""
        return [self.encoded[name][i] for name, i in
                (next(self.sampler) for _ in range(self.stage.batch_size))]

    def after_step(self, step: int) -> None:
        """Checkpoint every N steps (atomic; old ones pruned)."""
        every = self.ctx.recipe.checkpoint.every_n_steps
        if every and step % every == 0 and step < self.stage.steps:
            self.save(step)

    def save(self, step: int) -> str:
        """Checkpoint at ``step`` with the sampler position."""
        from learner.checkpoint import checkpoint_dir, prune_checkpoints

        path = str(checkpoint_dir(self.dir / "ckpt", step))
        self.learners.save_checkpoint(path, {"step": step,
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


def run_sft_stage(ctx: Any, stage: Any, model_path: str) -> dict[str, Any]:
    """``cpt``/``sft``: ``stage.steps`` optimizer steps of masked NLL on packed rows."""
    kinds = ("text", "sft") if stage.kind == "cpt" else ("sft", "text")
    run = _StageRun(ctx, stage, model_path, ctx.stage_sources(stage.sources, kinds))
    for step in range(run.start_step + 1, stage.steps + 1):
        t0 = time.monotonic()
        docs = run.draw()
        rows = _sft_rows(docs, ctx, run.pad_id)
        num_tokens = int(rows.mask.sum())
        metrics = run.learners.train("train_sft", rows, num_tokens=num_tokens,
                                     num_seqs=len(docs))
        dt = time.monotonic() - t0
        real = sum(len(d) for d in docs)
        run.logger.log(step, {"loss": metrics["loss"], "lr": metrics["lr"],
                              "grad_norm": metrics["grad_norm"], "tokens": real,
                              "tokens_per_s": real / dt, "time/step_s": dt},
                       show=("loss", "tokens_per_s"))
        run.after_step(step)
    return run.finish(["loss", "tokens_per_s"])


def _pair_rows(pairs: list, pad_id: int):
    from rlsys.data.packing import collate_padded

    chosen = collate_padded([c for c, _ in pairs], pad_id)
    rejected = collate_padded([r for _, r in pairs], pad_id)
    return chosen, rejected


def run_dpo_stage(ctx: Any, stage: Any, model_path: str) -> dict[str, Any]:
    """``dpo``: reference log-probs from the stage's starting weights (computed per batch by a
    frozen reference group), then DPO/IPO/cDPO steps."""
    from rlsys.config.schema import DPOConfig

    opts = stage.dpo or DPOConfig()
    run = _StageRun(ctx, stage, model_path, ctx.stage_sources(stage.sources, ("pair",)))
    reference = Learners(ctx.recipe, model_path, total_steps=1, name="reference")
    try:
        for step in range(run.start_step + 1, stage.steps + 1):
            t0 = time.monotonic()
            chosen, rejected = _pair_rows(run.draw(), run.pad_id)
            ref_c = reference.forward("forward_sequence_logps", chosen)
            ref_r = reference.forward("forward_sequence_logps", rejected)
            shards = _dpo_shards(run.learners, chosen, rejected, ref_c, ref_r)
            metrics = run.learners.train_micro("train_dpo", shards, loss=opts.loss,
                                               beta=opts.beta,
                                               label_smoothing=opts.label_smoothing,
                                               num_pairs=chosen.input_ids.shape[0])
            metrics["time/step_s"] = time.monotonic() - t0
            run.logger.log(step, metrics, show=("loss", "rewards/margin"))
            run.after_step(step)
    finally:
        reference.shutdown()
    return run.finish(["loss", "rewards/margin", "rewards/accuracy"])


def _dpo_shards(learners: Learners, chosen, rejected, ref_c, ref_r) -> list[list]:
    from rlsys.controller.learners import split_rows, take_rows

    plan = split_rows(chosen.input_ids.shape[0], learners.micro_batch_size,
                      learners.world_size)
    return [[(take_rows(chosen, r), take_rows(rejected, r), ref_c[r.start:r.stop],
              ref_r[r.start:r.stop]) for r in rank] for rank in plan]
