"""Multi-turn rollout: a batch of environment episodes driven turn by turn on one engine.

``run_episodes`` is what ``RolloutWorker.run_episodes`` calls. For every record it starts ``n``
environments (``rlsys.envs``), templates their opening messages, and then per turn:

1. one batched ``engine.generate`` call over every still-active trajectory (its whole context
   so far as token ids: on vLLM the earlier turns are served from the prefix cache; on an
   engine with ``reuses_turn_kv`` (HF) turns but the last pass ``keep_kv=True`` so the next
   turn prefills only the observation, and the kept KV is dropped when the episodes end);
2. the environments step concurrently in threads (sandboxed tools, test runs);
3. each observation is appended as token ids: the template's end-of-turn text (only the part
   the engine did not generate) plus the observation messages and the next assistant header,
   rendered by the chat template as a *delta* (``ChatDelta``). Generated ids are never
   decoded and re-tokenized: the learner trains on exactly the ids the engine sampled.

The result is one ``Completion`` per trajectory: ``response_ids`` is everything after the
prompt (generated turns and observations interleaved), ``loss_mask`` marks the generated
tokens (observations are context only), ``logprobs`` are the engine's for generated tokens and
0 elsewhere, ``turn_rewards`` places each turn's reward increment on that turn's last generated
token (they sum to the episode reward), and ``trajectory`` holds the messages, tool calls and
per-turn rewards for ``samples.jsonl`` and the metrics.

Caps (``rlsys.config.env.EnvConfig``): ``max_turns`` assistant turns, ``max_tokens_per_turn``
generated tokens per turn, ``max_total_tokens`` for prompt + response; hitting one ends the
episode as ``truncated`` with the environment's reward as it stands. This module does not
score with reward workers, hold weights or know about Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rlsys.envs import Environment, Message, StepResult, get_env, step_many
from rlsys.types import Completion

_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
          {"role": "assistant", "content": "\x00"}]


class ChatDelta:
    """Token ids the chat template puts between turns, computed once per tokenizer.

    ``close_text``: what follows an assistant message's content (e.g. ``<|im_end|>\\n``);
    ``observation_ids(messages)``: the observation messages plus the next assistant header, as
    the template renders them after a finished assistant turn.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        rendered = self._render(_PROBE)
        cut = rendered.rfind("\x00")
        if cut < 0:
            raise ValueError("the chat template dropped the assistant content; multi-turn "
                             "rollouts need a template that renders assistant messages")
        self.prefix_text = rendered
        self.close_text = rendered[cut + 1:]
        eos = tokenizer.eos_token
        self.eos_id = tokenizer.eos_token_id
        # what remains of close_text once the engine generated its EOS (e.g. "\n")
        self.after_eos = self.close_text.split(eos, 1)[1] if eos and eos in self.close_text \
            else self.close_text

    def _render(self, messages: Sequence[Message], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def ids(self, text: str) -> list[int]:
        """Token ids of template text (special tokens already spelled out in it)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def close_ids(self, generated: Sequence[int]) -> list[int]:
        """Ids that end an assistant turn the engine generated: the rest of the template's
        end-of-turn text after a generated EOS, the whole of it after a cut-off turn."""
        ended = bool(generated) and generated[-1] == self.eos_id
        return self.ids(self.after_eos if ended else self.close_text)

    def observation_ids(self, messages: Sequence[Message]) -> list[int]:
        """Ids of ``messages`` (tool results, feedback) and the next assistant header."""
        full = self._render([*_PROBE, *messages], generation_prompt=True)
        if not full.startswith(self.prefix_text):
            raise ValueError("the chat template renders earlier turns differently once more "
                             "messages follow; multi-turn rollouts need a prefix-stable template")
        return self.ids(full[len(self.prefix_text):])


@dataclass(frozen=True)
class EpisodeCaps:
    """The rollout's limits of one trajectory (see ``rlsys.config.env.EnvConfig``)."""

    max_turns: int = 4
    max_tokens_per_turn: int = 512
    max_total_tokens: int = 2048

    def __post_init__(self) -> None:
        if min(self.max_turns, self.max_tokens_per_turn, self.max_total_tokens) < 1:
            raise ValueError(f"episode caps must be >= 1, got {self}")


@dataclass
class _Trajectory:
    """Mutable state of one episode while it runs."""

    env: Environment
    prompt_ids: list[int]
    messages: list[Message]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_rewards: list[tuple[int, float]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    end: str = "running"
    finish_reason: str = "stop"
    info: dict[str, Any] = field(default_factory=dict)
    versions: list[int] = field(default_factory=list)  # weights version per response token
    version: int = 0  # the version of the latest turn (observations inherit it)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    def add(self, ids: Sequence[int], *, generated: bool, logprobs: Sequence[float] = ()) -> None:
        self.response_ids += list(ids)
        self.versions += [self.version] * len(ids)
        self.loss_mask += [generated] * len(ids)
        self.logprobs += list(logprobs) if generated else [0.0] * len(ids)


def run_episodes(
    engine: Any,
    tokenizer: Any,
    encode: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    env_type: str,
    env_kwargs: Mapping[str, Any] | None = None,
    caps: EpisodeCaps = EpisodeCaps(),
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_token_ids: Sequence[int] = (),
    before_turn: Callable[[], int] | None = None,
) -> list[Completion]:
    """``n`` episodes per record, grouped by record in order (``prompt_index`` = record index).

    ``encode(messages) -> ids`` templates the opening messages with the generation prompt (the
    worker's own chat templating, system prompt included). ``before_turn`` (async RL: load the
    newest weights, return their version) runs before every turn's generation; each response
    token then records the version of the turn that produced it or, for an observation, of the
    turn before it (``Completion.token_versions``). Environments are closed at the end, also
    on error.
    """
    delta = ChatDelta(tokenizer)
    envs: list[Environment] = []
    reuse_kv = bool(getattr(engine, "reuses_turn_kv", False))
    try:
        for _ in range(len(records) * n):
            envs.append(get_env(env_type, **dict(env_kwargs or {})))
        openings = _reset_all(envs, [records[i // n] for i in range(len(envs))])
        trajs = [_Trajectory(env, list(encode(msgs)), list(msgs))
                 for env, msgs in zip(envs, openings, strict=True)]
        for t in trajs:
            if t.length >= caps.max_total_tokens:
                t.done, t.end = True, "truncated"
        for turn in range(caps.max_turns):
            active = [t for t in trajs if not t.done]
            if not active:
                break
            last = turn == caps.max_turns - 1
            if before_turn is not None:  # new weights: kept turn KV is dropped by the load
                version = before_turn()
                for t in active:
                    t.version = version
            _generate_turn(engine, delta, active, caps=caps, temperature=temperature,
                           top_p=top_p, seed=None if seed is None else seed + 7919 * turn,
                           stop_token_ids=stop_token_ids,
                           extra={"keep_kv": not last} if reuse_kv else {})
            _step_turn(delta, [t for t in active if not t.done], caps, last=last)
        for t in trajs:
            if not t.done:
                t.done, t.end = True, "truncated"
        return [_completion(t, i // n, tokenizer, versions=before_turn is not None)
                for i, t in enumerate(trajs)]
    finally:
        if reuse_kv:
            engine.drop_kv()
        for env in envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real error
                pass


def _reset_all(envs: Sequence[Environment],
               records: Sequence[Mapping[str, Any]]) -> list[list[Message]]:
    """``env.reset(record)`` for every pair, concurrently (resets may start sandboxes)."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(envs), 16)),
                            thread_name_prefix="rlsys-env-reset") as pool:
        return list(pool.map(lambda pair: pair[0].reset(pair[1]), zip(envs, records, strict=True)))


def _generate_turn(engine: Any, delta: ChatDelta, active: list[_Trajectory], *,
                   caps: EpisodeCaps, temperature: float, top_p: float, seed: int | None,
                   stop_token_ids: Sequence[int], extra: Mapping[str, Any]) -> None:
    """One batched generation over ``active`` (grouped by their token budget this turn);
    ``extra``: engine-specific ``generate`` arguments (``keep_kv``)."""
    by_budget: dict[int, list[_Trajectory]] = {}
    for t in active:
        budget = min(caps.max_tokens_per_turn, caps.max_total_tokens - t.length)
        by_budget.setdefault(budget, []).append(t)
    for budget, group in sorted(by_budget.items()):
        outs = engine.generate([t.prompt_ids + t.response_ids for t in group], n=1,
                               temperature=temperature, top_p=top_p, max_new_tokens=budget,
                               seed=seed, stop_token_ids=list(stop_token_ids), **extra)
        for t, out in zip(group, outs, strict=True):
            start = len(t.response_ids)
            t.add(out.response_ids, generated=True, logprobs=out.logprobs)
            text = delta.tokenizer.decode(out.response_ids, skip_special_tokens=True)
            t.turns.append({"assistant": text, "start": start, "end": len(t.response_ids),
                            "finish_reason": out.finish_reason})
            t.messages.append({"role": "assistant", "content": text})
            t.finish_reason = out.finish_reason


def _step_turn(delta: ChatDelta, stepping: list[_Trajectory], caps: EpisodeCaps, *,
               last: bool) -> None:
    """Step every environment with its turn's text; append observations or finish (on the
    ``last`` allowed turn an unfinished episode is truncated without its observation)."""
    results: list[StepResult] = step_many([t.env for t in stepping],
                                          [t.turns[-1]["assistant"] for t in stepping])
    for t, result in zip(stepping, results, strict=True):
        turn = t.turns[-1]
        turn.update(reward=result.reward, info=dict(result.info))
        if result.reward != t.reward:  # the increment lands on the turn's last generated token
            t.turn_rewards.append((turn["end"] - 1, result.reward - t.reward))
            t.reward = result.reward
        for key in ("tool_calls", "tool_errors"):
            t.info[key] = t.info.get(key, 0) + int(result.info.get(key, 0))
        if result.done:
            t.done, t.end = True, str(result.info.get("end", "done"))
            t.info.update({k: v for k, v in result.info.items() if k in ("correct", "pred")})
            continue
        generated = t.response_ids[turn["start"]:turn["end"]]
        obs = delta.close_ids(generated) + delta.observation_ids(result.observation)
        if last or t.length + len(obs) >= caps.max_total_tokens:
            t.done, t.end = True, "truncated"  # no further turn: the observation is dropped
            continue
        t.add(obs, generated=False)
        turn["observation"] = [dict(m) for m in result.observation]
        t.messages += [dict(m) for m in result.observation]


def _completion(t: _Trajectory, index: int, tokenizer: Any, *, versions: bool) -> Completion:
    trajectory = {"messages": t.messages, "turns": [
        {k: v for k, v in turn.items() if k not in ("start", "end")} for turn in t.turns],
        "reward": t.reward, "end": t.end, "truncated": t.end == "truncated",
        "num_turns": len(t.turns), "tool_calls": t.info.get("tool_calls", 0),
        "tool_errors": t.info.get("tool_errors", 0),
        **{k: t.info[k] for k in ("correct", "pred") if k in t.info}}
    return Completion(
        prompt_index=index, prompt_ids=t.prompt_ids, response_ids=t.response_ids,
        text=tokenizer.decode(t.response_ids, skip_special_tokens=False),
        logprobs=t.logprobs, finish_reason=t.finish_reason, loss_mask=t.loss_mask,
        turn_rewards=t.turn_rewards, trajectory=trajectory,
        token_versions=list(t.versions) if versions else None)
