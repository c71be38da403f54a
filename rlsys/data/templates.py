"""Render chat conversations to text with the tokenizer's own chat template.

``render_chat`` uses ``tokenizer.chat_template`` when the tokenizer has one, else
``DEFAULT_CHAT_TEMPLATE``: a ChatML-style layout, one block per turn::

    <|im_start|>{role}\\n{content}<|im_end|>\\n

with ``<|im_start|>assistant\\n`` appended when ``add_generation_prompt`` is True. (The markers
are plain text for a tokenizer that lacks them as special tokens; that is fine for training.)

``render_segments`` renders the same text split into labelled pieces (template text, prompt
content, response content, end of an assistant turn); ``rlsys.data.encode`` builds label masks
from them. This module does not tokenize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_CHAT_TEMPLATE = "chatml"
TEMPLATE, PROMPT, RESPONSE, RESPONSE_END = "template", "prompt", "response", "response_end"
_ROLES = ("system", "user", "assistant", "tool")
_PLACEHOLDER = "\ue000RLSYS{}\ue001"  # private-use characters: never in real text


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text.

    Attributes:
        text: the characters.
        kind: ``template`` (markers/role headers/default system prompt), ``prompt`` (system, user or
            tool content), ``response`` (assistant content) or ``response_end`` (the template
            text that closes an assistant turn, e.g. ``<|im_end|>\\n``).
        turn: index of the message it belongs to (-1 for text outside any message).
    """

    text: str
    kind: str
    turn: int


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} dicts")
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ValueError(f"messages[{turn}].role must be one of {_ROLES}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{turn}].content must be a string")


def _default_render(messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def render_chat(
    tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = False
) -> str:
    """Render ``messages`` (multi-turn allowed) to the text the model is trained/prompted on."""
    _check_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    return _default_render(messages, add_generation_prompt)


def render_segments(tokenizer: Any, messages: list[dict[str, Any]]) -> list[Segment]:
    """Split ``render_chat(tokenizer, messages)`` into labelled ``Segment`` pieces.

    Each message content is replaced by a unique placeholder, every prefix of the conversation
    is rendered, and the placeholders mark where contents sit; the end of turn ``i`` is where
    the rendering of ``messages[: i + 1]`` stops. Requires a template that inserts contents
    verbatim and renders prefixes as prefixes (true of ChatML, Llama-3, SmolLM2, Mistral...);
    otherwise a ``ValueError`` says so.
    """
    _check_messages(messages)
    marked = [{**m, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
    full = render_chat(tokenizer, marked)
    ends = []
    for i in range(len(messages)):
        prefix = render_chat(tokenizer, marked[: i + 1])
        if not full.startswith(prefix):
            raise ValueError("chat template does not render conversation prefixes as prefixes")
        ends.append(len(prefix))
    segments: list[Segment] = []
    cursor = 0
    for i, message in enumerate(messages):
        start = full.find(_PLACEHOLDER.format(i), cursor)
        if start < 0:
            raise ValueError("chat template does not insert message contents verbatim")
        if start > cursor:
            segments.append(Segment(full[cursor:start], TEMPLATE, i))
        is_assistant = message["role"] == "assistant"
        segments.append(Segment(message["content"], RESPONSE if is_assistant else PROMPT, i))
        cursor = start + len(_PLACEHOLDER.format(i))
        if ends[i] > cursor:
            closing = RESPONSE_END if is_assistant else TEMPLATE
            segments.append(Segment(full[cursor : ends[i]], closing, i))
            cursor = ends[i]
    if cursor < len(full):
        segments.append(Segment(full[cursor:], TEMPLATE, -1))
    rendered = "".join(s.text for s in segments)
    if rendered != render_chat(tokenizer, messages):
        raise ValueError("chat template output depends on message contents beyond insertion")
    return [s for s in segments if s.text]
