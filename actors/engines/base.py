"""The rollout-engine contract (the registry of engines is in ``actors/engines/__init__.py``).

A rollout engine turns prompt token ids into sampled ``Completion`` objects (``rlsys.types``),
reloads weights in place, and recomputes teacher-forced log-probs of given responses. Engines
are plain objects (no Ray); ``actors.rollout.RolloutWorker`` owns one.

Which log-probs an engine reports (``logprobs_mode``, fixed at construction):

* ``"raw"`` (default): ``log softmax(logits)[token]`` of the model's own distribution at
  temperature 1, before temperature / top-p. This is what the learner's ``token_logprobs``
  computes, so ``rollout_logprobs`` and ``old_logprobs`` are comparable and the ratio
  ``exp(old_logprobs - rollout_logprobs)`` is a pure engine-mismatch term (for truncated
  importance sampling, TIS). vLLM calls this ``logprobs_mode="raw_logprobs"``.
* ``"processed"``: the log-prob under the distribution actually sampled from, i.e. after
  dividing the logits by ``temperature`` and renormalising over the top-p nucleus. Use it when
  the behaviour policy itself is wanted (off-policy corrections against the sampler).

At ``temperature=1, top_p=1`` both modes agree. This module defines the contract only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from rlsys.types import Completion

LOGPROBS_MODES = ("raw", "processed")


@runtime_checkable
class RolloutEngine(Protocol):
    """What ``RolloutWorker`` needs from a generation backend."""

    logprobs_mode: str

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int | None,
        stop_token_ids: list[int],
    ) -> list[Completion]:
        """Sample ``n`` completions per prompt, grouped by prompt in prompt order.

        Each ``Completion`` has ``prompt_index`` set, ``response_ids`` that include the stop
        token when one was generated (and no padding), ``finish_reason`` ``"stop"`` or
        ``"length"``, and one log-prob per response token (see ``logprobs_mode``).
        """
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Hugging Face-named tensors into the engine's model in place."""
        ...

    def score_logprobs(
        self, prompt_ids: list[list[int]], response_ids: list[list[int]]
    ) -> list[list[float]]:
        """Teacher-forced raw (temperature 1) log-probs of each response given its prompt."""
        ...

    def close(self) -> None:
        """Release the model and any engine processes."""
        ...


def check_sampling_args(
    prompt_ids: list[list[int]], *, n: int, temperature: float, top_p: float, max_new_tokens: int
) -> None:
    """Raise ``ValueError`` naming the argument when a sampling argument is out of range."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt_ids[{i}] is empty")


def trim_at_stop(tokens: list[int], stop_ids: set[int]) -> tuple[list[int], str]:
    """Cut ``tokens`` after the first stop token (kept); return them and the finish reason."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1], "stop"
    return tokens, "length"
