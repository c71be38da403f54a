"""Multi-turn rollouts (actors.episodes): exact token ids, masks, turn rewards, caps.

A scripted engine (it returns given token ids, so the hand-built trajectory is known) checks the
bookkeeping; the real HF engine on a tiny Llama checks that the context fed back each turn is
exactly what the engine sampled (its teacher-forced log-probs over the whole trajectory equal
the rollout log-probs); ``tool_math`` runs with its real sandboxed tools.
"""

from __future__ import annotations

import pytest
import torch

from actors.engines.hf import HFEngine
from actors.episodes import ChatDelta, EpisodeCaps, run_episodes
from rlsys.controller.experience import build_experience, token_rewards
from rlsys.envs import ENVS, StepResult
from rlsys.modeling.load import load_tokenizer
from rlsys.types import Completion


class Countdown:
    """Three assistant turns: turns 1 and 2 get an observation, turn 3 ends with reward 1.
    Turn 2 earns 0.25 on the way (a per-turn reward)."""

    def __init__(self, turns: int = 3) -> None:
        self.turns, self.seen, self.closed = turns, [], False

    def reset(self, record):
        self.seen = []
        return [{"role": "system", "content": "count"}, {"role": "user", "content": record["q"]}]

    def step(self, text):
        self.seen.append(text)
        k = len(self.seen)
        if k >= self.turns:
            return StepResult([], 1.0, True, {"end": "answer", "correct": True})
        return StepResult([{"role": "tool", "content": f"obs {k}"}], 0.25 if k >= 2 else 0.0,
                          False, {"tool_calls": 1, "tool_errors": int(k == 2)})

    def close(self):
        self.closed = True


@pytest.fixture(scope="module", autouse=True)
def _countdown_env():
    ENVS.register("countdown_test", Countdown)
    yield


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


class Scripted:
    """An engine that answers turn k of every trajectory with ``script[k]`` (ids), recording
    the contexts it was given; log-probs are -(position + 1) / 8 (exact in binary)."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script, self.contexts, self.turn = script, [], 0

    def generate(self, prompt_ids, *, n, temperature, top_p, max_new_tokens, seed,
                 stop_token_ids):
        ids = self.script[min(self.turn, len(self.script) - 1)][:max_new_tokens]
        self.turn += 1
        self.contexts.append([list(p) for p in prompt_ids])
        return [Completion(i, list(p), list(ids), "", [-(j + 1) / 8 for j in range(len(ids))],
                           "stop" if ids and ids[-1] == 2 else "length")
                for i, p in enumerate(prompt_ids)]


def _encode(tok):
    def encode(messages):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    return encode


def test_chat_delta_rebuilds_the_template_token_for_token(tok):
    delta = ChatDelta(tok)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 2*3?"}]
    ids = _encode(tok)(messages)
    for k, answer in enumerate(["Let me call a tool.", "It is 6.", "\\boxed{6}"]):
        generated = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        messages.append({"role": "assistant", "content": answer})
        observation = [{"role": "tool", "content": f"result {k}"}]
        messages += observation
        ids += generated + delta.close_ids(generated) + delta.observation_ids(observation)
    whole = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ids == tok(whole, add_special_tokens=False)["input_ids"]
    # a turn cut off before its EOS gets the template's whole end-of-turn text
    assert delta.close_ids([5, 6]) == tok("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert delta.close_ids([5, tok.eos_token_id]) == tok("\n", add_special_tokens=False)[
        "input_ids"]


def test_three_turn_trajectory_masks_logprobs_and_turn_rewards(tok):
    turn = [4093, 9690, 2]  # two tokens + EOS
    engine = Scripted([turn])
    out = run_episodes(engine, tok, _encode(tok), [{"q": "a"}, {"q": "b"}],
                       env_type="countdown_test", n=2, seed=0)
    assert [c.prompt_index for c in out] == [0, 0, 1, 1]
    c = out[0]
    delta = ChatDelta(tok)
    obs = [delta.close_ids(turn) + delta.observation_ids([{"role": "tool", "content": f"obs {k}"}])
           for k in (1, 2)]
    assert c.response_ids == turn + obs[0] + turn + obs[1] + turn
    assert c.loss_mask == [True] * 3 + [False] * len(obs[0]) + [True] * 3 + \
        [False] * len(obs[1]) + [True] * 3
    lp = [-0.125, -0.25, -0.375]
    assert c.logprobs == lp + [0.0] * len(obs[0]) + lp + [0.0] * len(obs[1]) + lp
    second_end = 3 + len(obs[0]) + 2
    assert c.turn_rewards == [(second_end, 0.25), (len(c.response_ids) - 1, 0.75)]
    tr = c.trajectory
    assert tr["num_turns"] == 3 and tr["reward"] == 1.0 and tr["end"] == "answer"
    assert tr["tool_calls"] == 2 and tr["tool_errors"] == 1 and not tr["truncated"]
    assert [m["role"] for m in tr["messages"]] == ["system", "user", "assistant", "tool",
                                                   "assistant", "tool", "assistant"]
    # the engine saw prompt + everything so far, each turn
    assert engine.contexts[2][0] == c.prompt_ids + c.response_ids[:-3]

    exp = build_experience(out, [1.0] * 4, group_ids=[0, 0, 1, 1], pad_id=tok.pad_token_id)
    p = len(c.prompt_ids)
    assert exp.tokens.mask[0].sum() == 9
    assert torch.equal(exp.tokens.mask[0, p: p + len(c.response_ids)],
                       torch.tensor(c.loss_mask))
    rewards = token_rewards(exp)
    assert rewards[0].sum().item() == pytest.approx(1.0)
    assert rewards[0, p + second_end].item() == pytest.approx(0.25)
    assert (rewards[0][~exp.tokens.mask[0]] == 0).all()


def test_before_turn_versions_every_token_by_the_turn_that_made_it(tok):
    """Async episodes: weights version 3 for turn 1, 5 from turn 2 on (as if new weights
    arrived after turn 1): generated tokens carry their turn's version, an observation the
    version of the turn before it; without ``before_turn`` there are no versions."""
    turn = [4093, 9690, 2]
    engine, calls = Scripted([turn]), []

    def before_turn() -> int:
        calls.append(engine.turn)  # runs before each turn's generation
        return 3 if len(calls) == 1 else 5

    out = run_episodes(engine, tok, _encode(tok), [{"q": "a"}], env_type="countdown_test",
                       n=2, seed=0, before_turn=before_turn)
    assert calls == [0, 1, 2]  # once per turn, before it generates
    delta = ChatDelta(tok)
    obs = [len(delta.close_ids(turn) + delta.observation_ids(
        [{"role": "tool", "content": f"obs {k}"}])) for k in (1, 2)]
    for c in out:
        assert c.token_versions == [3] * (3 + obs[0]) + [5] * (3 + obs[1] + 3)
        assert len(c.token_versions) == len(c.response_ids)
    plain = run_episodes(Scripted([turn]), tok, _encode(tok), [{"q": "a"}],
                         env_type="countdown_test")
    assert plain[0].token_versions is None


def test_caps_truncate_turns_and_total_tokens(tok):
    engine = Scripted([[4093, 9690, 2]])
    out = run_episodes(engine, tok, _encode(tok), [{"q": "a"}], env_type="countdown_test",
                       caps=EpisodeCaps(max_turns=2))
    assert out[0].trajectory["truncated"] and out[0].trajectory["num_turns"] == 2
    # the reward as it stands; no observation after the last allowed turn
    assert out[0].trajectory["reward"] == 0.25 and out[0].loss_mask[-1]
    assert sum(v for _, v in out[0].turn_rewards) == 0.25
    prompt_len = len(_encode(tok)(Countdown().reset({"q": "a"})))
    engine = Scripted([[4093] * 50])
    out = run_episodes(engine, tok, _encode(tok), [{"q": "a"}], env_type="countdown_test",
                       caps=EpisodeCaps(max_turns=8, max_tokens_per_turn=8,
                                        max_total_tokens=prompt_len + 30))
    c = out[0]
    assert len(c.prompt_ids) + len(c.response_ids) <= prompt_len + 30
    assert c.trajectory["truncated"] and c.finish_reason == "length"


def test_real_engine_context_is_exactly_what_it_sampled(tiny_model, tok):
    engine = HFEngine(tiny_model, max_batch_size=8)
    out = run_episodes(engine, tok, _encode(tok), [{"q": "x"}, {"q": "y"}],
                       env_type="countdown_test", n=2, seed=3,
                       caps=EpisodeCaps(max_turns=3, max_tokens_per_turn=6,
                                        max_total_tokens=400))
    for c in out:
        assert c.trajectory["num_turns"] == 3
        scored = engine.score_logprobs([c.prompt_ids], [c.response_ids])[0]
        gen = [i for i, m in enumerate(c.loss_mask) if m]
        assert len(gen) == sum(c.loss_mask) > 0
        gap = max(abs(scored[i] - c.logprobs[i]) for i in gen)
        assert gap < 1e-3, gap
        assert all(c.logprobs[i] == 0.0 for i, m in enumerate(c.loss_mask) if not m)


def test_tool_math_episode_with_sandboxed_python(tok):
    call = '<tool_call>{"name": "python", "arguments": {"code": "print(123 * 456)"}}</tool_call>'
    script = [tok(call, add_special_tokens=False)["input_ids"] + [2],
              tok("\\boxed{56088}", add_special_tokens=False)["input_ids"] + [2]]
    out = run_episodes(Scripted(script), tok, _encode(tok),
                       [{"prompt": "What is 123 * 456?", "answer": "56088"}],
                       env_type="tool_math", caps=EpisodeCaps(max_turns=4))
    tr = out[0].trajectory
    assert tr["reward"] == 1.0 and tr["correct"] is True and tr["tool_calls"] == 1
    assert tr["turns"][0]["observation"][0]["content"].strip().endswith("56088")
    assert tr["tool_errors"] == 0
