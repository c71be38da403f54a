"""CPU weight sync: pack/unpack round trip, and engine log-probs equal the learner's after sync."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.rollout import RolloutWorker
from actors.weight_sync import PackedState, pack_state_dict, unpack_state_dict


def test_pack_unpack_roundtrip_mixed_dtypes():
    gen = torch.Generator().manual_seed(0)
    state = {
        "a.weight": torch.randn(3, 4, generator=gen),
        "b.bias": torch.randn(5, generator=gen).to(torch.bfloat16),
        "c.scale": torch.tensor(2.5),  # 0-d
        "d.weight": torch.randn(4, 3, generator=gen).t(),  # non-contiguous
        "e.idx": torch.arange(6, dtype=torch.int64).view(2, 3),
    }
    payload = pack_state_dict(state)
    assert set(payload.buffers) == {"float32", "bfloat16", "int64"}
    assert all(isinstance(b, np.ndarray) and b.ndim == 1 for b in payload.buffers.values())
    assert payload.nbytes == sum(t.numel() * t.element_size() for t in state.values())
    out = dict(unpack_state_dict(payload))
    assert list(out) == list(state)
    for name, tensor in state.items():
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor), name


def test_unpack_returns_views_not_copies():
    payload = pack_state_dict({"w": torch.ones(4), "v": torch.zeros(2)})
    views = dict(unpack_state_dict(payload))
    payload.buffers["float32"][0] = 7.0
    assert views["w"][0].item() == 7.0


def test_tied_weights_are_stored_once():
    embed = torch.randn(5, 3)
    state = {"embed.weight": embed, "head.weight": embed, "other": embed[1:]}
    payload = pack_state_dict(state)
    assert payload.buffers["float32"].size == 15 + 12  # the slice is not an exact alias
    out = dict(unpack_state_dict(payload))
    assert all(torch.equal(out[k], v) for k, v in state.items())


def test_pack_rejects_non_tensors():
    with pytest.raises(TypeError, match="'x' is list"):
        pack_state_dict({"x": [1, 2]})


def _hf_logprobs(model_path: str, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Teacher-forced log-probs from a direct transformers forward (the 'learner' side)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def test_logprobs_match_learner_after_sync(tiny_model, tiny_model_b):
    from transformers import AutoModelForCausalLM

    worker = RolloutWorker("hf", tiny_model, engine_kwargs={"max_batch_size": 8})
    prompt = worker.encode(["What is 2 + 3?"])[0]
    completion = worker.generate([prompt], n=1, temperature=1.0, max_new_tokens=8, seed=0)[0]
    response = completion.response_ids
    before = torch.tensor(worker.score_logprobs([prompt], [response])[0])
    new_model = _hf_logprobs(tiny_model_b, prompt, response)
    assert (before - new_model).abs().max() > 0.01  # the two models really differ

    learner = AutoModelForCausalLM.from_pretrained(tiny_model_b, dtype=torch.float32)
    payload = pack_state_dict(learner.state_dict())
    assert isinstance(payload, PackedState)
    assert worker.update_weights(payload) == 1
    after = torch.tensor(worker.score_logprobs([prompt], [response])[0])
    torch.testing.assert_close(after, new_model, atol=1e-4, rtol=0)
    # Sampling log-probs (raw mode, T=1) agree with the learner too.
    sampled = worker.generate([prompt], n=1, temperature=1.0, max_new_tokens=6, seed=1)[0]
    torch.testing.assert_close(torch.tensor(sampled.logprobs),
                               _hf_logprobs(tiny_model_b, prompt, sampled.response_ids),
                               atol=1e-4, rtol=0)
    assert worker.ping()["weights_version"] == 1


def test_update_weights_rejects_unknown_names_and_shapes(tiny_model):
    worker = RolloutWorker("hf", tiny_model)
    with pytest.raises(KeyError, match="nope.weight"):
        worker.update_weights({"nope.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="model.norm.weight"):
        worker.update_weights({"model.norm.weight": torch.zeros(3)})
    with pytest.raises(TypeError, match="PackedState or a state dict"):
        worker.update_weights([1, 2])


def test_worker_chat_template_and_system_prompt(tiny_model):
    worker = RolloutWorker("hf", tiny_model, system_prompt="Be brief.")
    ids = worker.encode(["hi", [{"role": "user", "content": "hi"}], [5, 6, 7]])
    text = worker.tokenizer.decode(ids[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert ids[0] == ids[1] and ids[2] == [5, 6, 7]
    raw = RolloutWorker("hf", tiny_model, chat_template=False)
    assert raw.encode(["hi"])[0] == raw.tokenizer("hi")["input_ids"]
    with pytest.raises(TypeError, match=r"prompts\[0\]"):
        raw.encode([[{"role": "user", "content": "hi"}]])
