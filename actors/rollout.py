"""``RolloutWorker``: prompts in, sampled ``Completion`` objects out, weights swapped in place.

A plain class (no Ray): ``actors.launch`` wraps it with ``ray.remote``. It owns one rollout
engine (``actors.engines``) and the tokenizer that turns chat prompts into token ids. It does
not score, batch across workers, or keep any training state beyond a weights version counter.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import torch

from actors.engines import build_engine
from actors.rollout_receive import WeightReceiverMixin
from actors.weight_sync import PackedState, unpack_state_dict
from rlsys.types import Completion

Prompt = str | list[dict[str, str]] | list[int]
#: partial rollouts: called with the loaded weights version, returns ``(version, payload)`` of
#: newer weights or None (``actors.launch.BoardSource`` reads the pool's published weights)
WeightsSource = Callable[[int], "tuple[int, Any] | None"]


class RolloutWorker(WeightReceiverMixin):
    """One rollout engine plus chat templating and a weights version.

    Args:
        engine: engine registry name (``"hf"`` or ``"vllm"``).
        model_path: local Hugging Face directory (model + tokenizer).
        engine_kwargs: extra keyword arguments for the engine constructor.
        chat_template: wrap string prompts as a user message and apply the tokenizer's chat
            template (``add_generation_prompt=True``); False tokenizes the raw string.
        system_prompt: prepended as a system message to chat prompts that have none.
    """

    def __init__(
        self,
        engine: str,
        model_path: str,
        *,
        engine_kwargs: dict[str, Any] | None = None,
        chat_template: bool = True,
        system_prompt: str | None = None,
    ) -> None:
        from rlsys.modeling.load import load_tokenizer

        self.engine_name = engine
        self.model_path = model_path
        self.chat_template = chat_template
        self.system_prompt = system_prompt
        self.tokenizer = load_tokenizer(model_path)
        self.engine = build_engine(engine, model_path, **(engine_kwargs or {}))
        self.weights_version = 0
        self.last_load_s: float | None = None  # seconds the last update_weights spent loading
        # the last full weights (a reference, no copy): what adapter-only syncs merge onto
        self._full: PackedState | Mapping[str, torch.Tensor] | None = None
        # async mode: weights received beside a running generation, loaded at its next
        # boundary (``actors.rollout_receive``)
        self._staged: tuple[int, dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._staged_guard = threading.Lock()
        self._into_engine = self._full_in_engine = False  # see actors.rollout_receive

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt: a list of ints passes through; text/messages are templated."""
        return [self._encode_one(p, i) for i, p in enumerate(prompts)]

    def _encode_one(self, prompt: Prompt, index: int) -> list[int]:
        if _is_token_ids(prompt):
            return list(prompt)
        if not self.chat_template:
            if not isinstance(prompt, str):
                raise TypeError(f"prompts[{index}]: chat_template=False needs a str or token ids, "
                                f"got {type(prompt).__name__}")
            return self.tokenizer(prompt)["input_ids"]
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        elif _is_messages(prompt):
            messages = list(prompt)
        else:
            raise TypeError(f"prompts[{index}]: expected str, list of messages or token ids, "
                            f"got {prompt!r:.80}")
        if self.system_prompt is not None and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        # The template already holds the special tokens (e.g. <|im_start|>).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int | None = None,
        stop_token_ids: Sequence[int] = (),
    ) -> list[Completion]:
        """``n`` completions per prompt, grouped by prompt; ``prompt_index`` is call-local."""
        return self.engine.generate(
            self.encode(prompts), n=n, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, stop_token_ids=list(stop_token_ids),
        )

    def run_episodes(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        env: Mapping[str, Any],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop_token_ids: Sequence[int] = (),
        before_turn: Callable[[], int] | None = None,
    ) -> list[Completion]:
        """``n`` multi-turn episodes per record in the environment ``env`` (the recipe's
        ``env:`` section as a dict: ``type``, ``kwargs``, ``max_turns``,
        ``max_tokens_per_turn``, ``max_total_tokens``); see ``actors.episodes``."""
        from actors.episodes import EpisodeCaps, run_episodes

        if not self.chat_template:
            raise ValueError("multi-turn episodes need chat_template=True (the observations "
                             "are rendered by the chat template)")
        caps = EpisodeCaps(**{k: int(env[k]) for k in ("max_turns", "max_tokens_per_turn",
                                                       "max_total_tokens") if k in env})
        return run_episodes(
            self.engine, self.tokenizer, lambda messages: self._encode_one(messages, 0),
            records, env_type=str(env["type"]), env_kwargs=env.get("kwargs") or {}, caps=caps,
            n=n, temperature=temperature, top_p=top_p, seed=seed,
            stop_token_ids=stop_token_ids, before_turn=before_turn)

    def run_episodes_partial(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        weights_source: WeightsSource | None,
        env: Mapping[str, Any],
        **sampling: Any,
    ) -> list[Completion]:
        """Async multi-turn: ``run_episodes`` that loads the newest weights before every turn
        (``pull_weights``: staged by the weight group, or offered by ``weights_source``), so
        episodes in flight when new weights arrive continue on them; each completion's
        ``token_versions`` holds the weights version of every response token. Weights change
        only between turns, in this (single) thread."""
        return self.run_episodes(records, env=env, **sampling,
                                 before_turn=lambda: self.pull_weights(weights_source))

    def update_weights(
        self, payload: PackedState | Mapping[str, torch.Tensor], version: int | None = None
    ) -> int:
        """Load new weights (a ``PackedState`` or a plain state dict); return the new version.

        ``version`` sets the counter explicitly (a restarted worker re-applying the latest
        weights reports the same version as its peers); otherwise it is incremented.
        """
        start = time.perf_counter()
        if isinstance(payload, PackedState) and payload.lora is not None:
            self._load_adapter(dict(unpack_state_dict(payload)), payload.lora)
        elif isinstance(payload, PackedState | Mapping):
            if not self._engine_applies_adapters():
                self._full, self._full_in_engine = payload, False
            named = unpack_state_dict(payload) if isinstance(payload, PackedState) else \
                payload.items()
            self.engine.load_weights(named)
        else:
            raise TypeError(f"update_weights: payload must be a PackedState or a state dict, "
                            f"got {type(payload).__name__}")
        self.last_load_s = time.perf_counter() - start
        self.weights_version = self.weights_version + 1 if version is None else int(version)
        return self.weights_version

    def _load_adapter(self, adapter: dict[str, torch.Tensor], lora: dict[str, Any]) -> None:
        """An adapter-only sync: the engine applies it itself when it can (``load_adapter``:
        the HF engine, the vLLM engine with native LoRA), else it is merged here onto the last
        full weights (``W + alpha/r B A``) and loaded as full weights (vLLM, merge mode)."""
        load_adapter = getattr(self.engine, "load_adapter", None)  # not part of RolloutEngine
        if load_adapter is not None and self._engine_applies_adapters():
            load_adapter(adapter.items(), lora)
            return
        from rlsys.modeling.lora import merge_adapter

        scaling = float(lora["lora_alpha"]) / float(lora["r"])
        merged = merge_adapter(self.base_weights(), adapter, scaling=scaling)
        self.engine.load_weights(merged.items())

    def _engine_applies_adapters(self) -> bool:
        # ``applies_adapters``: an engine that has load_adapter but may merge instead (vLLM)
        return (getattr(self.engine, "load_adapter", None) is not None
                and bool(getattr(self.engine, "applies_adapters", True)))

    def base_weights(self) -> dict[str, torch.Tensor]:
        """What an adapter merges onto, by Hugging Face name: the last full weights synced, else
        the model directory's safetensors (the weights the engine started with)."""
        if self._full is None and self._full_in_engine:
            raise RuntimeError("an adapter sync needs the last full weights, but they went "
                               "straight into the engine's workers (weight group into_engine); "
                               "sync full weights through the actor first")
        if isinstance(self._full, PackedState):
            return dict(unpack_state_dict(self._full))
        if self._full is not None:
            return dict(self._full)
        from safetensors.torch import load_file

        files = sorted(Path(self.model_path).glob("*.safetensors"))
        return {k: v for f in files for k, v in load_file(str(f)).items()}

    def score_logprobs(
        self, prompt_ids: list[list[int]], response_ids: list[list[int]]
    ) -> list[list[float]]:
        """Teacher-forced raw log-probs of each response under the current weights."""
        return self.engine.score_logprobs(prompt_ids, response_ids)

    def generate_partial(
        self,
        prompts: Sequence[Prompt],
        *,
        weights_source: WeightsSource | None,
        chunk_tokens: int,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int | None = None,
        stop_token_ids: Sequence[int] = (),
    ) -> list[Completion]:
        """Partial rollouts: like ``generate``, but ``chunk_tokens`` at a time, and before each
        chunk the newest weights ``weights_source`` offers are loaded (``pull_weights``), so a
        generation in flight when new weights arrive continues on them. Each completion's
        ``token_versions`` holds the weights version of every response token and ``logprobs``
        the log-prob under those weights (what truncated IS needs).

        A chunk after the first continues each unfinished sample from ``prompt + response so
        far`` with ``n=1`` and seed ``seed + chunk * 1_000_003``. Weights change only between
        chunks, in this (single) thread: the engine is never touched by two calls at once.
        """
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        def sample(ids: list[list[int]], n: int, seed: int | None, budget: int) -> list[Completion]:
            return self.engine.generate(ids, n=n, temperature=temperature, top_p=top_p,
                                        max_new_tokens=budget, seed=seed,
                                        stop_token_ids=list(stop_token_ids))

        version = self.pull_weights(weights_source)
        out = sample(self.encode(prompts), n, seed, min(chunk_tokens, max_new_tokens))
        for c in out:
            c.token_versions = [version] * len(c.response_ids)
        for chunk in itertools.count(1):
            # a sample stopped by length before max_new_tokens is unfinished (all have one length)
            open_ = [c for c in out
                     if c.finish_reason == "length" and len(c.response_ids) < max_new_tokens]
            if not open_:
                break
            version = self.pull_weights(weights_source)
            budget = min(chunk_tokens, max_new_tokens - len(open_[0].response_ids))
            more = sample([list(c.prompt_ids) + list(c.response_ids) for c in open_], 1,
                          None if seed is None else seed + chunk * 1_000_003, budget)
            for c, m in zip(open_, more, strict=True):
                c.response_ids = list(c.response_ids) + list(m.response_ids)
                c.logprobs = list(c.logprobs) + list(m.logprobs)
                c.token_versions = (c.token_versions or []) + [version] * len(m.response_ids)
                c.finish_reason = m.finish_reason
        for c in out:
            c.text = self.tokenizer.decode(c.response_ids, skip_special_tokens=True)
        return out

    def pull_weights(self, weights_source: WeightsSource | None) -> int:
        """Load the newest weights on offer: those staged by the weight group
        (``stage_weights``), then those ``weights_source(current version)`` offers (None:
        nothing newer); return the weights version now loaded."""
        self.take_staged()
        newer = weights_source(self.weights_version) if weights_source is not None else None
        if newer is not None:
            version, payload = newer
            self.update_weights(payload, version)
        return self.weights_version

    def ping(self) -> dict[str, Any]:
        """Liveness and identity: pid, engine, model path, weights version, last load time."""
        return {"pid": os.getpid(), "engine": self.engine_name, "model_path": self.model_path,
                "weights_version": self.weights_version, "last_load_s": self.last_load_s}

    def close(self) -> None:
        """Shut the engine down."""
        self.engine.close()


def _is_token_ids(prompt: Prompt) -> TypeGuard[list[int]]:
    return isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) and bool(prompt)


def _is_messages(prompt: Prompt) -> TypeGuard[list[dict[str, str]]]:
    return isinstance(prompt, list) and bool(prompt) and all(isinstance(m, dict) for m in prompt)
