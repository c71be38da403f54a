"""Reward-model scoring with a Hugging Face sequence classifier (one logit per sequence).

The prompt and response are rendered as a chat (the tokenizer's chat template when it has one,
else ``"User: ...\\nAssistant: ..."``), tokenized with right padding, truncated to
``max_length`` and scored in batches under ``torch.no_grad``. torch and transformers are
imported when a ``ModelReward`` is built, never at module import. This module does not train
reward models and does not serve them over HTTP.

``path`` is a classifier directory, or a peft ``SEQ_CLS`` adapter directory (it holds
``adapter_config.json``): then the classifier is built on the adapter's base model, the adapter
(with its trained head) is loaded by ``peft`` and merged. An ``rm`` stage with LoRA writes both:
the merged classifier in ``stages/NAME/final`` and its adapter in ``final/adapter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import RewardItem, Score


def render_messages(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The text a reward classifier sees for a chat: the tokenizer's chat template when it has
    one, else one ``"Role: content"`` line per message (``User: ...\nAssistant: ...``). The
    ``rm`` stage trains on exactly this text (``rlsys.controller.reward_model``)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``render_messages`` uses a chat template (which then writes the special tokens,
    so tokenize with ``add_special_tokens=False``)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _load_classifier(path: str) -> Any:
    """``AutoModelForSequenceClassification`` of ``path``; an adapter directory is loaded on its
    base model (``base_model_name_or_path``) with ``peft`` and merged."""
    import json
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.is_file():
        return AutoModelForSequenceClassification.from_pretrained(path)
    from peft import PeftModel

    config = json.loads(adapter_config.read_text())
    base_path, task = config.get("base_model_name_or_path"), config.get("task_type")
    if task != "SEQ_CLS" or not base_path:
        raise ValueError(f"ModelReward: adapter {path} has task_type={task!r} and base "
                         f"{base_path!r}; a reward adapter needs task_type 'SEQ_CLS' and a base")
    base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    return PeftModel.from_pretrained(base, path).merge_and_unload()


class ModelReward:
    """Scores with ``AutoModelForSequenceClassification`` (``num_labels=1``) loaded from ``path``.

    Args:
        path: a Hugging Face model directory holding the classifier and its tokenizer, or a
            ``SEQ_CLS`` adapter directory with its tokenizer (see the module docstring).
        batch_size: sequences per forward pass.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda:0"``.
        max_length: sequences are truncated to this many tokens (keeping the start).
    """

    name = "model"

    def __init__(self, path: str, batch_size: int = 8, device: str = "cpu",
                 max_length: int = 1024) -> None:
        import torch
        from transformers import AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"ModelReward: batch_size and max_length must be >= 1, got "
                             f"{batch_size}, {max_length}")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = _load_classifier(path).to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"ModelReward: {path} has num_labels={self.model.config.num_labels}"
                             ", expected 1 (a scalar reward head)")
        if self.tokenizer.pad_token is None:
            # Batching needs a pad id; the classifier pools the last non-pad token, so reusing
            # EOS only shifts the pooled position past trailing EOS tokens, the same in every
            # batch composition.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if self.tokenizer.pad_token is None:
            raise ValueError(f"ModelReward: tokenizer in {path} has no pad, eos or unk token")
        self.tokenizer.padding_side = "right"
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.path, self.batch_size, self.device, self.max_length = (path, batch_size, device,
                                                                    max_length)
        self.version = f"model:{path}"

    @property
    def _has_template(self) -> bool:
        return has_chat_template(self.tokenizer)

    def render(self, prompt: str, response: str) -> str:
        """The text the classifier sees for one (prompt, response) pair."""
        return render_messages(self.tokenizer, [{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": response}])

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One scalar per item; items that cannot be rendered become per-item errors."""
        out: list[Score | None] = [None] * len(items)
        texts: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            try:
                texts.append((i, self.render(item.prompt, item.response)))
            except Exception as exc:  # noqa: BLE001 - one bad item must not fail the batch
                out[i] = Score(None, error=f"cannot render item: {type(exc).__name__}: {exc}")
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            for (i, _), value in zip(chunk, self._forward([t for _, t in chunk]), strict=True):
                out[i] = Score(value)
        return [s for s in out if s is not None]

    def _forward(self, texts: list[str]) -> list[float]:
        torch = self._torch
        batch: Any = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                    max_length=self.max_length,
                                    # a chat template already writes its special tokens
                                    add_special_tokens=not self._has_template)
        with torch.no_grad():
            logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                attention_mask=batch["attention_mask"].to(self.device)).logits
        return logits[:, 0].float().cpu().tolist()  # (B,)
