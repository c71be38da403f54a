"""HFEngine on a tiny random Llama: sampling shapes, stop handling, seeds, log-prob fidelity."""

from __future__ import annotations

import pytest
import torch

from actors.engines import ENGINES, build_engine
from actors.engines.base import RolloutEngine, trim_at_stop
from actors.engines.hf import HFEngine

PROMPTS = [[1, 9690, 198, 2683], [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198], [1, 17]]


@pytest.fixture(scope="module")
def engine(tiny_model) -> HFEngine:
    return HFEngine(tiny_model, max_batch_size=4)


def test_registry_builds_hf_engine(tiny_model):
    assert ENGINES.names() == ["hf", "vllm"]
    built = build_engine("hf", tiny_model, max_batch_size=2)
    assert isinstance(built, RolloutEngine)
    with pytest.raises(KeyError, match="known: hf, vllm"):
        build_engine("nope", tiny_model)


def test_n_samples_per_prompt_grouped_in_order(engine):
    # max_batch_size=4 with n=3 forces one prompt per generate call: batching is exercised.
    out = engine.generate(PROMPTS, n=3, temperature=1.0, top_p=1.0, max_new_tokens=5, seed=0,
                          stop_token_ids=[])
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for c in out:
        assert c.prompt_ids == PROMPTS[c.prompt_index]
        assert len(c.response_ids) == len(c.logprobs) == 5
        assert c.finish_reason == "length"
        assert all(lp < 0 for lp in c.logprobs)
    # Samples of one prompt differ (a random 49k-token model almost never repeats 5 tokens).
    assert out[0].response_ids != out[1].response_ids


def test_seed_determinism(engine):
    kwargs = dict(n=2, temperature=1.0, top_p=0.9, max_new_tokens=6, stop_token_ids=[])
    a = engine.generate(PROMPTS, seed=123, **kwargs)
    b = engine.generate(PROMPTS, seed=123, **kwargs)
    c = engine.generate(PROMPTS, seed=124, **kwargs)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    assert [x.logprobs for x in a] == [x.logprobs for x in b]
    assert [x.response_ids for x in a] != [x.response_ids for x in c]


def test_stop_token_kept_padding_dropped_and_finish_reasons(engine):
    greedy = engine.generate(PROMPTS, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6,
                             seed=None, stop_token_ids=[])
    tokens = greedy[1].response_ids
    stop = tokens[2]
    out = engine.generate(PROMPTS, n=1, temperature=0.0, top_p=1.0, max_new_tokens=6,
                          seed=None, stop_token_ids=[stop])
    expected, _ = trim_at_stop(tokens, {stop})
    assert out[1].response_ids == expected and expected[-1] == stop
    assert out[1].finish_reason == "stop"
    assert len(out[1].logprobs) == len(expected)
    # Other prompts keep going in the same batch; their rows are not cut by the padding.
    for i in (0, 2):
        if stop not in greedy[i].response_ids:
            assert out[i].response_ids == greedy[i].response_ids
            assert out[i].finish_reason == "length"


def test_raw_logprobs_equal_teacher_forced(engine):
    out = engine.generate(PROMPTS, n=2, temperature=0.7, top_p=0.95, max_new_tokens=8, seed=3,
                          stop_token_ids=[])
    scored = engine.score_logprobs([c.prompt_ids for c in out], [c.response_ids for c in out])
    for c, lp in zip(out, scored, strict=True):
        torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(lp), atol=1e-4, rtol=0)


def test_processed_mode_applies_temperature(tiny_model):
    processed = HFEngine(tiny_model, logprobs_mode="processed")
    kwargs = dict(n=1, top_p=1.0, max_new_tokens=4, seed=5, stop_token_ids=[])
    at_t1 = processed.generate(PROMPTS[:1], temperature=1.0, **kwargs)[0]
    raw = processed.score_logprobs([at_t1.prompt_ids], [at_t1.response_ids])[0]
    torch.testing.assert_close(torch.tensor(at_t1.logprobs), torch.tensor(raw), atol=1e-4, rtol=0)
    # At temperature 0.5 the logged value is log softmax(logits / 0.5)[token]: recompute it.
    at_half = processed.generate(PROMPTS[:1], temperature=0.5, **kwargs)[0]
    ids = torch.tensor([at_half.prompt_ids + at_half.response_ids])
    with torch.no_grad():
        logits = processed.model(input_ids=ids).logits[0, len(at_half.prompt_ids) - 1 : -1]
    expected = torch.log_softmax(logits / 0.5, -1).gather(
        -1, torch.tensor(at_half.response_ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(at_half.logprobs), expected, atol=1e-4, rtol=0)


def test_bad_arguments_are_named(engine, tiny_model):
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(PROMPTS, n=1, temperature=1.0, top_p=0.0, max_new_tokens=2, seed=0,
                        stop_token_ids=[])
    with pytest.raises(ValueError, match=r"prompt_ids\[1\] is empty"):
        engine.generate([[1], []], n=1, temperature=1.0, top_p=1.0, max_new_tokens=2, seed=0,
                        stop_token_ids=[])
    with pytest.raises(ValueError, match="logprobs_mode"):
        HFEngine(tiny_model, logprobs_mode="weird")


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_shared_prefill_draws_the_same_tokens(tiny_model, temperature):
    """One prefill per prompt, copied to its n samples, samples what n prefills would."""
    shared = HFEngine(tiny_model, max_batch_size=12)
    plain = HFEngine(tiny_model, max_batch_size=12, share_prefill=False)
    kwargs = {"n": 3, "temperature": temperature, "max_new_tokens": 8, "seed": 5}
    got, want = shared.generate(PROMPTS, **kwargs), plain.generate(PROMPTS, **kwargs)
    assert [c.prompt_index for c in got] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [c.response_ids for c in got] == [c.response_ids for c in want]
    assert [c.prompt_ids for c in got] == [c.prompt_ids for c in want]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs),
                                   atol=1e-4, rtol=0)
    teacher = plain.score_logprobs([c.prompt_ids for c in got], [c.response_ids for c in got])
    for c, t in zip(got, teacher, strict=True):
        torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(t), atol=1e-4, rtol=0)
