"""Tokenize training examples and build label masks (``mask[t]`` True where token t is a target).

Masking modes for chat/instruction examples (``MASK_MODES``, after the tutorial's IT section):

* ``none``: every token counts (plain next-token prediction on the rendered chat).
* ``prompt``: only the final assistant response counts (content plus its end-of-turn marker);
  the template, system prompt, instruction/input and earlier turns are masked.
* ``template``: only template tokens (role headers, turn markers, a template's default system
  prompt) are masked; instruction/input (user/system content) and response text count.
* ``assistant``: every assistant turn of a multi-turn conversation counts; nothing else does.

The end-of-turn marker after assistant content (``<|im_end|>`` for ChatML) counts whenever its
response does, so the model learns to stop. Position 0 never counts (it has no prediction).

How masks are computed: ``render_segments`` labels the rendered text by character ranges; the
whole text is tokenized once, and each boundary becomes a token index by tokenizing the text up
to it. When that prefix tokenization is a prefix of the full tokenization (true at special-token
markers) the boundary is exact; when a BPE merge spans the boundary (e.g. ``"\\n"`` + ``" Hi"``
-> ``"\\n Hi"``) the straddling token goes to the segment that starts inside it.

Truncation: an example longer than ``max_len`` keeps its first ``max_len`` tokens and is flagged
``truncated`` (never dropped; callers count it). Truncation can remove every target of an SFT
example; ``Encoded.num_targets`` is then 0 and the example adds nothing to a loss.
This module does not pack, pad or batch (see ``rlsys.data.packing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlsys.data.templates import PROMPT, RESPONSE, RESPONSE_END, render_chat, render_segments

MASK_MODES = ("none", "prompt", "template", "assistant")


@dataclass
class Encoded:
    """One tokenized document.

    Attributes:
        input_ids: token ids.
        mask: same length; True where the token is a training target (never at index 0).
        truncated: True when the document was cut to ``max_len``.
    """

    input_ids: list[int]
    mask: list[bool]
    truncated: bool = False

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.mask):
            raise ValueError(
                f"input_ids ({len(self.input_ids)}) and mask ({len(self.mask)}) lengths differ"
            )

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        """Number of tokens that count."""
        return sum(self.mask)


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_max_len(max_len: int) -> None:
    if not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len must be an integer >= 2, got {max_len!r}")


def _finish(input_ids: list[int], mask: list[bool], max_len: int) -> Encoded:
    mask = list(mask)
    if mask:
        mask[0] = False
    truncated = len(input_ids) > max_len
    return Encoded(list(input_ids[:max_len]), mask[:max_len], truncated)


def _boundary_token(full_ids: list[int], prefix_ids: list[int]) -> int:
    """Token index where a character boundary falls (see the module docstring)."""
    n = len(prefix_ids)
    if full_ids[:n] == prefix_ids:
        return n
    common = 0
    for a, b in zip(full_ids, prefix_ids, strict=False):
        if a != b:
            break
        common += 1
    return common


def _counts(kind: str, turn: int, mode: str, last_assistant: int) -> bool:
    if mode == "none":
        return True
    if mode == "template":
        return kind in (PROMPT, RESPONSE, RESPONSE_END)
    if mode == "assistant":
        return kind in (RESPONSE, RESPONSE_END)
    return kind in (RESPONSE, RESPONSE_END) and turn == last_assistant  # "prompt"


def encode_messages(
    tokenizer: Any, messages: list[dict[str, Any]], *, mask_mode: str, max_len: int
) -> Encoded:
    """Tokenize a chat conversation and mask it according to ``mask_mode`` (``MASK_MODES``)."""
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    _check_max_len(max_len)
    assistant_turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistant_turns:
        raise ValueError("an SFT example needs at least one assistant turn")
    segments = render_segments(tokenizer, messages)
    text = "".join(s.text for s in segments)
    input_ids = _tokenize(tokenizer, text)
    mask: list[bool] = []
    offset = 0
    for segment in segments:
        offset += len(segment.text)
        end = _boundary_token(input_ids, _tokenize(tokenizer, text[:offset]))
        end = max(end, len(mask))
        counts = _counts(segment.kind, segment.turn, mask_mode, assistant_turns[-1])
        mask.extend([counts] * (end - len(mask)))
    mask.extend([mask[-1] if mask else False] * (len(input_ids) - len(mask)))
    return _finish(input_ids, mask, max_len)


def example_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation of an SFT record: ``messages``, or ``prompt`` (+ ``response``)."""
    if "messages" in example:
        return list(example["messages"])
    if "prompt" not in example or "response" not in example:
        raise ValueError("an SFT example needs 'messages' or both 'prompt' and 'response'")
    return prompt_messages(example["prompt"]) + [
        {"role": "assistant", "content": example["response"]}
    ]


def prompt_messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt as a message list: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def encode_sft(
    tokenizer: Any, example: dict[str, Any], *, mask_mode: str, max_len: int
) -> Encoded:
    """Encode an SFT record (``messages`` or ``prompt``/``response``) with ``mask_mode``."""
    return encode_messages(
        tokenizer, example_messages(example), mask_mode=mask_mode, max_len=max_len
    )


def encode_text(tokenizer: Any, text: str, max_len: int) -> Encoded:
    """Encode a CPT document: the tokenizer's own special tokens (e.g. BOS) + text + EOS.

    Every token but the first counts. A truncated document loses its EOS.
    """
    _check_max_len(max_len)
    if tokenizer.eos_token_id is None:
        raise ValueError("encode_text needs a tokenizer with an eos token")
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    input_ids.append(tokenizer.eos_token_id)
    return _finish(input_ids, [True] * len(input_ids), max_len)


def _completion_messages(completion: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return list(completion)


def encode_pair(
    tokenizer: Any, example: dict[str, Any], max_len: int
) -> tuple[Encoded, Encoded]:
    """Encode a preference record (``prompt``, ``chosen``, ``rejected``) for DPO.

    ``prompt`` is a string or message list; ``chosen``/``rejected`` are strings or assistant
    message lists. Only the final assistant response (and its end-of-turn marker) counts.
    """
    for key in ("prompt", "chosen", "rejected"):
        if key not in example:
            raise ValueError(f"a preference example needs {key!r}")
    prompt = prompt_messages(example["prompt"])
    return tuple(  # type: ignore[return-value]
        encode_messages(tokenizer, prompt + _completion_messages(example[key]),
                        mask_mode="prompt", max_len=max_len)
        for key in ("chosen", "rejected")
    )


def encode_prompt(tokenizer: Any, prompt: str | list[dict[str, Any]]) -> list[int]:
    """Token ids of a generation prompt: the chat-templated prompt plus the assistant header."""
    text = render_chat(tokenizer, prompt_messages(prompt), add_generation_prompt=True)
    return _tokenize(tokenizer, text)
