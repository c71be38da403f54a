"""The ``rm`` stage: train a scalar-head reward model on preference pairs with the
Bradley-Terry loss (``learner.reward.RewardLearner``, ZeRO 0-3), report its pair accuracy on
held-out pairs before and after, and save it where a later stage's ``model`` reward can load it.

Each pair ``{prompt, chosen, rejected}`` (prompt: a string or messages; chosen / rejected: a
string or assistant messages) is rendered exactly as ``rewards.model.ModelReward`` renders a
(prompt, response) item (``rewards.model.render_messages``; no system prompt), so the saved
model scores in the ``model`` reward with the numbers it had here. Pairs whose chosen equals
their rejected carry no preference: they are skipped and counted.

The stage does not change the policy: it returns its input model as ``checkpoint`` (the next
stage, e.g. PPO, starts from the SFT model), and writes the reward model to
``RUN_DIR/stages/NAME/final`` (use ``reward: {type: model, kwargs: {path:
"{run_dir}/stages/NAME/final"}}``) with per-pair held-out scores in ``eval_scores.jsonl``.
With LoRA (``model.lora`` or the stage's ``lora``) the adapters and the scalar head train
(``learner.reward``); ``final`` is the merged classifier and ``final/adapter`` the peft
adapter, either of which the ``model`` reward loads.
It keeps no intermediate checkpoints (``checkpoint.every_n_steps`` does not apply): a run
stopped inside the stage trains it again from the start; a finished stage is skipped on resume.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from rlsys.controller.learners import Learners, stage_lora
from rlsys.controller.metrics import plot_curves, stage_logger
from rlsys.types import TokenBatch


def render_pair(tokenizer: Any, record: dict[str, Any]) -> tuple[str, str]:
    """The classifier texts of a pair's chosen and rejected conversations."""
    from rewards.model import render_messages
    from rlsys.data.encode import _completion_messages, prompt_messages

    prompt = prompt_messages(record["prompt"])
    return tuple(render_messages(tokenizer, prompt + _completion_messages(record[key]))
                 for key in ("chosen", "rejected"))  # type: ignore[return-value]


def encode_pairs(tokenizer: Any, records: list[dict[str, Any]], max_len: int
                 ) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """``(token-id pairs, indices of the records kept)``; identical chosen/rejected are left
    out. Tokenized as ``ModelReward`` does (truncated to ``max_len``, keeping the start)."""
    from rewards.model import has_chat_template

    special = not has_chat_template(tokenizer)
    pairs, kept = [], []
    for i, rec in enumerate(records):
        chosen, rejected = render_pair(tokenizer, rec)
        if chosen == rejected:
            continue
        ids = [tokenizer(text, add_special_tokens=special, truncation=True,
                         max_length=max_len)["input_ids"] for text in (chosen, rejected)]
        pairs.append((ids[0], ids[1]))
        kept.append(i)
    return pairs, kept


def pad_rows(rows: list[list[int]], pad_id: int) -> TokenBatch:
    """Right-padded rows; ``seq_ids`` and ``mask`` are 1/True on real tokens."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        real[i, : len(row)] = True
    position_ids = torch.arange(width).expand(len(rows), width) * real
    return TokenBatch(input_ids, position_ids.clone(), real.long(), real.clone())


def score_pairs(learners: Learners, pairs: list[tuple[list[int], list[int]]], pad_id: int,
                chunk: int = 32) -> tuple[list[float], list[float]]:
    """Rewards of every chosen and rejected row (no grad), ``chunk`` rows per call."""
    chosen, rejected = [], []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        chosen += learners.forward("forward_rewards", pad_rows([c for c, _ in part], pad_id)
                                   ).tolist()
        rejected += learners.forward("forward_rewards", pad_rows([r for _, r in part], pad_id)
                                     ).tolist()
    return chosen, rejected


class _Data:
    """Encoded train pairs (with a mixture sampler) and held-out pairs of the stage."""

    def __init__(self, ctx: Any, stage: Any, tokenizer: Any) -> None:
        from rlsys.controller.supervised import _sampler

        opts, max_len = stage.rm, ctx.recipe.data.max_len
        self.skipped: dict[str, int] = {}
        self.train: dict[str, list] = {}
        for name in ctx.stage_sources(stage.sources, ("pair",)):
            self.train[name], _ = self._encode(ctx, name, tokenizer, max_len)
        self.sampler = _sampler(ctx, stage, self.train)
        names = (opts.eval_sources if opts and opts.eval_sources else
                 [s.name for s in ctx.recipe.data.sources if s.split == "eval"
                  and s.kind == "pair"])
        limit = opts.max_eval_pairs if opts else None
        self.heldout: dict[str, tuple[list, list[dict]]] = {}
        for name in names:
            records = ctx.records(name)[:limit]
            pairs, kept = self._encode(ctx, name, tokenizer, max_len, records)
            self.heldout[name] = (pairs, [records[i] for i in kept])

    def _encode(self, ctx: Any, name: str, tokenizer: Any, max_len: int,
                records: list[dict] | None = None) -> tuple[list, list[int]]:
        rows: list[dict] = ctx.records(name) if records is None else records
        pairs, kept = encode_pairs(tokenizer, rows, max_len)
        skipped = len(rows) - len(pairs)
        if skipped:
            self.skipped[name] = skipped
            print(f"[data] {name}: skipped {skipped} pair(s) whose chosen equals rejected",
                  flush=True)
        if not pairs:
            from rlsys.data.sources import DataError

            raise DataError(f"data source {name!r}: no pair with chosen != rejected")
        return pairs, kept

    def draw(self, batch_size: int) -> list[tuple[list[int], list[int]]]:
        """The next ``batch_size`` train pairs from the mixture."""
        return [self.train[name][i] for name, i in
                (next(self.sampler) for _ in range(batch_size))]


def heldout_accuracy(learners: Learners, data: _Data, pad_id: int, out_path: Any = None
                     ) -> dict[str, float]:
    """Pair accuracy (share with r_chosen > r_rejected) and mean reward gap per held-out
    source; per-pair scores written as JSON lines to ``out_path`` when given."""
    result: dict[str, float] = {}
    lines = []
    for name, (pairs, records) in data.heldout.items():
        chosen, rejected = score_pairs(learners, pairs, pad_id)
        gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
        result[f"{name}/pair_accuracy"] = sum(g > 0 for g in gaps) / len(gaps)
        result[f"{name}/margin"] = sum(gaps) / len(gaps)
        lines += [json.dumps({"source": name, "prompt": rec["prompt"], "chosen": rec["chosen"],
                              "rejected": rec["rejected"], "chosen_score": c,
                              "rejected_score": r})
                  for rec, c, r in zip(records, chosen, rejected, strict=True)]
    if out_path is not None:
        out_path.write_text("".join(line + "\n" for line in lines))
    return result


def run_rm_stage(ctx: Any, stage: Any, model_path: str) -> dict[str, Any]:
    """``rm``: ``stage.steps`` Bradley-Terry steps of ``stage.batch_size`` pairs; held-out
    pair accuracy before and after; returns the input model as ``checkpoint``."""
    from learner.reward import RewardLearner
    from rlsys.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    data = _Data(ctx, stage, tokenizer)
    pad_id, margin = tokenizer.pad_token_id, stage.rm.margin if stage.rm else 0.0
    out = ctx.stage_dir(stage.name)
    learners = Learners(ctx.recipe, model_path, total_steps=stage.steps, lr=stage.lr,
                        name="reward_model", learner_cls=RewardLearner,
                        lora=stage_lora(ctx.recipe, stage))
    lg = ctx.recipe.logging
    logger, final = stage_logger(ctx, stage), None  # the logger gets the trained model's path
    try:
        before = heldout_accuracy(learners, data, pad_id) if data.heldout else {}
        for step in range(1, stage.steps + 1):
            t0 = time.monotonic()
            pairs = data.draw(stage.batch_size)
            shards = _shards(learners, pairs, pad_id)
            metrics = learners.train_micro("train_rm", shards, margin=margin,
                                           num_pairs=len(pairs))
            metrics["time/step_s"] = time.monotonic() - t0
            logger.log(step, metrics, show=("loss", "rm/accuracy"))
        after = {}
        if data.heldout:
            after = heldout_accuracy(learners, data, pad_id, out / "eval_scores.jsonl")
        final = str(out / "final")
        learners.save_checkpoint(final, {"step": stage.steps}, training_state=False)
    finally:
        learners.shutdown()
        logger.close(final_model=final)
    if lg.plot:
        plot_curves(ctx.run_dir, stage.name, ["loss", "rm/accuracy"],
                    ctx.run_dir / f"{stage.name}_curves.png")
    for key, value in after.items():
        print(f"[{stage.name}] held-out {key}: {before[key]:.3f} -> {value:.3f}", flush=True)
    return {"checkpoint": model_path, "reward_model": final, "heldout_before": before,
            "heldout_after": after, "skipped_identical_pairs": data.skipped}


def _shards(learners: Learners, pairs: list, pad_id: int) -> list[list]:
    from rlsys.controller.learners import split_rows

    plan = split_rows(len(pairs), learners.micro_batch_size, learners.world_size)
    return [[(pad_rows([c for c, _ in pairs[r.start:r.stop]], pad_id),
              pad_rows([x for _, x in pairs[r.start:r.stop]], pad_id)) for r in rank]
            for rank in plan]
