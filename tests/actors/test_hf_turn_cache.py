"""The HF engine's turn KV cache: reused KV gives the tokens and log-probs a full prefill gives,
only new tokens are prefilled, weight loads invalidate it, and the byte bound holds.

``TurnCache`` itself is checked on hand-made tensors (longest prefix, strictly shorter than the
prompt, taken once, oldest evicted first); the engine on a tiny random Llama.
"""

from __future__ import annotations

import pytest
import torch

from actors.engines.hf import HFEngine
from actors.engines.hf_turn_cache import TurnCache
from actors.episodes import EpisodeCaps, run_episodes
from rlsys.envs import ENVS, StepResult
from rlsys.modeling.load import load_tokenizer

PROMPTS = [[1, 9690, 198, 2683], [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198], [1, 17, 30]]
GREEDY = dict(temperature=0.0, top_p=1.0, seed=None, stop_token_ids=[])


def _layers(length: int, fill: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.full((2, length, 4), fill), torch.full((2, length, 4), -fill))
            for _ in range(3)]


def test_take_returns_the_longest_shorter_prefix_once():
    cache = TurnCache(1 << 20)
    cache.put([1, 2, 3], _layers(3, 1.0))
    cache.put([1, 2, 3, 4, 5], _layers(5, 2.0))
    cache.put([1, 2, 3, 4, 5, 6], _layers(6, 3.0))
    # [1..6] is the whole prompt: at least one token must be left to run, so it is not taken
    entry = cache.take([1, 2, 3, 4, 5, 6])
    assert entry is not None and entry.ids == (1, 2, 3, 4, 5)
    assert float(entry.layers[0][0][0, 0, 0]) == 2.0
    assert cache.take([1, 2, 3, 4, 5, 9]).ids == (1, 2, 3)  # the longer one was taken
    assert cache.take([1, 2, 3, 4, 5, 9]) is None
    assert cache.take([7, 8, 9, 10, 11, 12, 13]) is None
    assert len(cache) == 1 and cache.hits == 8


def test_byte_bound_evicts_oldest_and_refuses_oversized_entries():
    one = sum(k.numel() * 4 + v.numel() * 4 for k, v in _layers(4))  # bytes of a 4-token entry
    cache = TurnCache(2 * one)
    cache.put([1, 1, 1, 1], _layers(4))
    cache.put([2, 2, 2, 2], _layers(4))
    cache.put([3, 3, 3, 3], _layers(4))
    assert len(cache) == 2 and cache.nbytes == 2 * one
    assert cache.take([1, 1, 1, 1, 0]) is None and cache.take([3, 3, 3, 3, 0]) is not None
    cache.put(list(range(9)), _layers(9))  # larger than the bound: not kept
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        TurnCache(-1)


def _next_turn(prompts, outs, observation=(198, 77, 1024, 198)):
    return [list(p) + list(o.response_ids) + list(observation)
            for p, o in zip(prompts, outs, strict=True)]


@pytest.mark.parametrize("n", [1, 2])
def test_second_turn_with_kept_kv_equals_full_prefill(tiny_model, n):
    kept = HFEngine(tiny_model, max_batch_size=8)
    fresh = HFEngine(tiny_model, max_batch_size=8, turn_cache_mb=0)
    first = kept.generate(PROMPTS, n=n, max_new_tokens=5, keep_kv=True, **GREEDY)
    assert len(kept.turn_cache) >= len(PROMPTS)  # greedy copies share one key
    prompts = _next_turn([o.prompt_ids for o in first], first)
    hits_before = kept.turn_cache.hits
    a = kept.generate(prompts, n=1, max_new_tokens=6, **GREEDY)
    b = fresh.generate(prompts, n=1, max_new_tokens=6, **GREEDY)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    gap = max(abs(p - q) for x, y in zip(a, b, strict=True)
              for p, q in zip(x.logprobs, y.logprobs, strict=True))
    assert gap < 1e-4, gap
    # every distinct first-turn row was served from the cache: its prompt and response but
    # the last sampled token (never fed back)
    distinct = {tuple(o.prompt_ids + o.response_ids[:-1]) for o in first}
    assert kept.turn_cache.hits - hits_before == sum(len(k) for k in distinct)
    assert len(kept.turn_cache) == 0  # taken once; keep_kv was off for the second call


def test_third_turn_and_rows_without_an_entry_mix_in_one_batch(tiny_model):
    kept = HFEngine(tiny_model, max_batch_size=8)
    fresh = HFEngine(tiny_model, max_batch_size=8, turn_cache_mb=0)
    first = kept.generate(PROMPTS[:2], n=1, max_new_tokens=4, keep_kv=True, **GREEDY)
    second = kept.generate(_next_turn(PROMPTS[:2], first) + [PROMPTS[2]], n=1,
                           max_new_tokens=3, keep_kv=True, **GREEDY)
    third_prompts = _next_turn([o.prompt_ids for o in second], second, observation=(5, 6))
    a = kept.generate(third_prompts, n=1, max_new_tokens=4, **GREEDY)
    b = fresh.generate(third_prompts, n=1, max_new_tokens=4, **GREEDY)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    assert max(abs(p - q) for x, y in zip(a, b, strict=True)
               for p, q in zip(x.logprobs, y.logprobs, strict=True)) < 1e-4


def test_weight_load_drops_kept_kv(tiny_model, tiny_model_b):
    kept = HFEngine(tiny_model, max_batch_size=8)
    first = kept.generate(PROMPTS, n=1, max_new_tokens=4, keep_kv=True, **GREEDY)
    assert len(kept.turn_cache) == len(PROMPTS)
    other = HFEngine(tiny_model_b, max_batch_size=8, turn_cache_mb=0)
    kept.load_weights(other.state_dict().items())
    assert len(kept.turn_cache) == 0  # KV of the old weights must not be served
    prompts = _next_turn(PROMPTS, first)
    a = kept.generate(prompts, n=1, max_new_tokens=4, **GREEDY)
    b = other.generate(prompts, n=1, max_new_tokens=4, **GREEDY)
    assert [x.response_ids for x in a] == [x.response_ids for x in b]
    for bad in (-1, 1.5, "64"):
        with pytest.raises(ValueError, match=r"turn_cache_mb must be a whole number"):
            HFEngine(tiny_model, turn_cache_mb=bad)


class _Echo:
    """Three turns, each answered with the same short tool observation."""

    def reset(self, record):
        self.k = 0
        return [{"role": "user", "content": record["q"]}]

    def step(self, text):
        self.k += 1
        if self.k >= 3:
            return StepResult([], 1.0, True, {"end": "answer"})
        return StepResult([{"role": "tool", "content": f"seen {self.k}"}], 0.0, False, {})

    def close(self):
        pass


def test_episodes_on_kept_kv_equal_episodes_that_recompute(tiny_model, tokenizer_dir):
    ENVS.register("echo_turn_cache_test", _Echo)
    tok = load_tokenizer(tokenizer_dir)

    def encode(messages):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    runs = {}
    for mb in (1024, 0):
        engine = HFEngine(tiny_model, max_batch_size=8, turn_cache_mb=mb)
        runs[mb] = run_episodes(engine, tok, encode, [{"q": "a"}, {"q": "bb"}, {"q": "c c c"}],
                                env_type="echo_turn_cache_test", n=1, temperature=0.0,
                                caps=EpisodeCaps(max_turns=3, max_tokens_per_turn=5,
                                                 max_total_tokens=400))
        assert len(engine.turn_cache) == 0  # dropped when the episodes ended
        if mb:
            assert engine.turn_cache.hits > 0
    for a, b in zip(runs[1024], runs[0], strict=True):
        assert a.trajectory["num_turns"] == b.trajectory["num_turns"] == 3
        assert a.response_ids == b.response_ids and a.loss_mask == b.loss_mask
        assert max(abs(p - q) for p, q in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
