"""Adapter-only weight sync (real LoRA learner, real HF engine in a RolloutWorker, no Ray):
after the sync the engine's log-probs match the learner's (gap <= 1e-3), the payload is a
fraction of the full weights, later syncs update the adapter in place, a full sync removes it,
and an engine that cannot apply adapters gets them merged on the worker."""

from __future__ import annotations

import pytest
import torch

from actors.rollout import RolloutWorker
from actors.weight_sync import pack_state_dict
from learner.launch import free_port
from learner.learner import Learner
from rlsys.types import TokenBatch
from tests.learner.batches import random_rows, token_batch

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"],
        "modules_to_save": []}
PROMPT = 5


def _learner(model_dir: str) -> Learner:
    return Learner(model_path=model_dir, lr=1e-2, grad_clip=0.0, seed=0, lora=LORA,
                   master_port=free_port())


def _train(learner: Learner, seed: int) -> None:
    batch = token_batch(random_rows(2, 12, seed=seed))
    for _ in range(2):
        learner.train_sft([batch], num_tokens=int(batch.mask.sum()))


def _gap(learner: Learner, worker: RolloutWorker, rows: list[list[int]]) -> float:
    """Max |engine - learner| token log-prob over the response part of ``rows``."""
    batch: TokenBatch = token_batch(rows, prompt_lens=[PROMPT] * len(rows))
    ours = learner.forward_logprobs(batch)
    theirs = worker.score_logprobs([r[:PROMPT] for r in rows], [r[PROMPT:] for r in rows])
    gaps = [(ours[i, PROMPT:len(r)] - torch.tensor(theirs[i])).abs().max().item()
            for i, r in enumerate(rows)]
    return max(gaps)


def _adapter_payload(learner: Learner):
    adapter, meta = learner.adapter_for_sync()
    return pack_state_dict(adapter, meta={"lora": meta})


def test_adapter_only_sync_matches_the_learner(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    worker = RolloutWorker("hf", tiny_model_dir, chat_template=False)
    rows = random_rows(3, 14, seed=7)
    _train(learner, seed=1)
    assert _gap(learner, worker, rows) > 1e-2  # the engine still has the base weights
    payload = _adapter_payload(learner)
    full = pack_state_dict(learner.state_dict_for_sync())
    assert payload.lora == {"r": 4, "lora_alpha": 8.0, "modules_to_save": None,
                            "target_modules": ["q_proj", "up_proj", "v_proj"]}
    assert payload.nbytes * 10 < full.nbytes
    worker.update_weights(payload)
    assert _gap(learner, worker, rows) <= 1e-3
    wrapped = worker.engine.model

    _train(learner, seed=2)  # a second sync copies into the same adapter layers
    worker.update_weights(_adapter_payload(learner))
    assert worker.engine.model is wrapped
    assert _gap(learner, worker, rows) <= 1e-3

    worker.update_weights(full)  # a full sync (merged weights) replaces the adapter layers
    assert type(worker.engine.model).__name__ == "LlamaForCausalLM"
    assert _gap(learner, worker, rows) > 1e-2  # the learner moved on since `full`
    _train(learner, seed=3)
    worker.update_weights(pack_state_dict(learner.state_dict_for_sync()))
    assert _gap(learner, worker, rows) <= 1e-3


def test_an_engine_without_adapters_gets_them_merged_on_the_worker(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    worker = RolloutWorker("hf", tiny_model_dir, chat_template=False)
    worker.engine.load_adapter = None  # behave like the vLLM engine: full weights only
    rows = random_rows(3, 14, seed=8)
    for seed in (4, 5):  # twice: the merge base stays the starting model, not the last merge
        _train(learner, seed=seed)
        worker.update_weights(_adapter_payload(learner))
        assert type(worker.engine.model).__name__ == "LlamaForCausalLM"
        assert _gap(learner, worker, rows) <= 1e-3


def test_an_adapter_the_engine_cannot_hold_is_refused(tiny_model_dir):
    worker = RolloutWorker("hf", tiny_model_dir, chat_template=False)
    payload = pack_state_dict(
        {"base_model.model.model.layers.0.mlp.nope.lora_A.weight": torch.zeros(4, 64)},
        meta={"lora": {"r": 4, "lora_alpha": 8.0, "target_modules": ["q_proj"],
                       "modules_to_save": None}})
    with pytest.raises(KeyError, match="no adapter tensors"):
        worker.update_weights(payload)
