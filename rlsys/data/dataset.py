"""Glue: source specs -> loaded records -> encoded examples per source -> a mixture sampler.

A stage's data is a list of ``SourceSpec`` (path, format, fields, weight, kind). ``kind`` is
``text`` (CPT documents, every token counts), ``sft`` (chat/instruction examples masked with
``mask_mode``) or ``pair`` (DPO preference pairs). A joint CPT+IT stage mixes ``text`` and
``sft`` sources in one sampler, as the tutorial recommends (e.g. 50 % CPT, 50 % IT, with a few
percent of general replay); ``pair`` sources cannot be mixed with the other kinds.

``build_stage_data`` returns ``StageData``: encoded examples per source, per-source counts
(records, skipped rows, truncated examples, examples left without targets) that it also logs,
and a ``MixtureSampler``. ``collate_examples`` turns a list of ``Encoded`` into a packed or
padded ``TokenBatch``. The supervised stages (``rlsys/controller/supervised.py``) encode with
``encode_records`` and collate with ``collate_examples``: one data path for CPT, SFT and DPO.
Plain arguments only; config objects stop at the controller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rlsys.data.encode import Encoded, encode_pair, encode_sft, encode_text
from rlsys.data.mixture import MixtureSampler
from rlsys.data.packing import collate_packed, collate_padded, pack
from rlsys.data.sources import load_records
from rlsys.types import TokenBatch

logger = logging.getLogger(__name__)
KINDS = ("text", "sft", "pair")


@dataclass(frozen=True)
class SourceSpec:
    """One data source of a stage.

    Attributes:
        name: unique name (used by the sampler and in logs).
        path: file or ``save_to_disk`` directory.
        kind: ``text``, ``sft`` or ``pair``.
        weight: mixing weight (relative; normalised over the stage's sources).
        format: see ``rlsys.data.sources.FORMATS``; guessed from the path when None.
        fields: canonical name -> column name mapping, or None.
        on_error: ``raise`` or ``skip`` malformed rows.
    """

    name: str
    path: str
    kind: str
    weight: float = 1.0
    format: str | None = None
    fields: dict[str, str] | None = None
    on_error: str = "raise"


@dataclass
class SourceStats:
    """Counts for one source: records read, rows skipped, examples truncated / without targets."""

    records: int = 0
    skipped: int = 0
    truncated: int = 0
    no_targets: int = 0


@dataclass
class StageData:
    """Encoded examples per source plus the sampler that mixes them.

    ``examples[name][i]`` is an ``Encoded`` (text/sft) or a ``(chosen, rejected)`` pair.
    """

    examples: dict[str, list[Any]]
    sampler: MixtureSampler
    stats: dict[str, SourceStats] = field(default_factory=dict)

    def take(self, draws: list[tuple[str, int]]) -> list[Any]:
        """The examples for a list of ``(source_name, index)`` draws."""
        return [self.examples[name][index] for name, index in draws]


def with_system_prompt(record: dict[str, Any], system: str | None, *, kind: str) -> dict[str, Any]:
    """``record`` with the recipe's system prompt in front of a plain-string prompt.

    An ``sft`` prompt/response record becomes a message list; a ``pair`` record's string
    ``prompt`` becomes ``[system, user]``. Records that already carry messages (their own system
    turn, or a deliberate lack of one) and ``text`` documents are returned unchanged."""
    if not system or kind == "text":
        return record
    if kind == "pair":
        if isinstance(record.get("prompt"), str):
            return {**record, "prompt": [{"role": "system", "content": system},
                                         {"role": "user", "content": record["prompt"]}]}
        return record
    if "messages" in record or "prompt" not in record or "response" not in record:
        return record
    return {"messages": [{"role": "system", "content": system},
                         {"role": "user", "content": record["prompt"]},
                         {"role": "assistant", "content": record["response"]}]}


def drop_identical_pairs(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Preference records whose ``chosen`` differs from ``rejected`` (a pair of equal answers
    carries no preference and only adds noise), and how many were dropped."""
    kept = [r for r in records if r.get("chosen") != r.get("rejected")]
    return kept, len(records) - len(kept)


def encode_records(
    records: list[dict[str, Any]], tokenizer: Any, *, kind: str, mask_mode: str, max_len: int,
    system: str | None = None,
) -> tuple[list[Any], SourceStats]:
    """Encode canonical records of one ``kind``; returns the examples and their counts.

    ``system`` (the recipe's system prompt) goes in front of plain-string prompts
    (``with_system_prompt``). Errors name the record's 1-based number."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    stats = SourceStats(records=len(records))
    examples: list[Any] = []
    for number, record in enumerate(records, start=1):
        try:
            record = with_system_prompt(record, system, kind=kind)
            if kind == "text":
                if "text" not in record:
                    raise ValueError("a text example needs 'text'")
                docs = [encode_text(tokenizer, record["text"], max_len)]
            elif kind == "sft":
                docs = [encode_sft(tokenizer, record, mask_mode=mask_mode, max_len=max_len)]
            else:
                docs = list(encode_pair(tokenizer, record, max_len))
        except ValueError as err:
            raise ValueError(f"record {number}: {err}") from None
        stats.truncated += any(d.truncated for d in docs)
        stats.no_targets += any(d.num_targets == 0 for d in docs)
        examples.append(docs[0] if kind != "pair" else tuple(docs))
    return examples, stats


def build_sft_examples(
    path: str,
    tokenizer: Any,
    *,
    mask_mode: str = "prompt",
    max_len: int = 2048,
    format: str | None = None,  # noqa: A002
    fields: dict[str, str] | None = None,
    on_error: str = "raise",
) -> list[Encoded]:
    """Load one SFT source and encode it (a shortcut for single-source SFT)."""
    loaded = load_records(path, format=format, fields=fields, on_error=on_error, kind="sft")
    examples, stats = encode_records(
        loaded.records, tokenizer, kind="sft", mask_mode=mask_mode, max_len=max_len
    )
    stats.skipped = loaded.skipped
    _log_stats(loaded.name, stats)
    return examples


def _log_stats(name: str, stats: SourceStats) -> None:
    logger.info(
        "source %s: %d records, %d skipped, %d truncated, %d without targets",
        name, stats.records, stats.skipped, stats.truncated, stats.no_targets,
    )


def build_stage_data(
    sources: list[SourceSpec | dict[str, Any]],
    tokenizer: Any,
    *,
    mask_mode: str = "prompt",
    max_len: int = 2048,
    seed: int = 0,
    num_samples: int | None = None,
) -> StageData:
    """Load and encode every source and build the weighted ``MixtureSampler`` over them."""
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(**s) for s in sources]
    if not specs:
        raise ValueError("a stage needs at least one data source")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    kinds = {s.kind for s in specs}
    if "pair" in kinds and len(kinds) > 1:
        raise ValueError(f"'pair' sources cannot be mixed with other kinds, got {sorted(kinds)}")
    examples: dict[str, list[Any]] = {}
    stats: dict[str, SourceStats] = {}
    for spec in specs:
        loaded = load_records(
            spec.path, format=spec.format, fields=spec.fields,
            on_error=spec.on_error, source_name=spec.name, kind=spec.kind,
        )
        try:
            encoded, counts = encode_records(
                loaded.records, tokenizer, kind=spec.kind, mask_mode=mask_mode, max_len=max_len
            )
        except ValueError as err:
            raise ValueError(f"source {spec.name!r} ({spec.path}): {err}") from None
        counts.skipped = loaded.skipped
        _log_stats(spec.name, counts)
        examples[spec.name], stats[spec.name] = encoded, counts
    sampler = MixtureSampler(
        {n: len(e) for n, e in examples.items()},
        {s.name: s.weight for s in specs},
        seed=seed,
        num_samples=num_samples,
    )
    return StageData(examples=examples, sampler=sampler, stats=stats)


def collate_examples(
    examples: list[Encoded], *, pad_id: int, max_tokens: int | None = None
) -> TokenBatch:
    """Packed ``TokenBatch`` (best-fit decreasing into rows of ``max_tokens``) or, when
    ``max_tokens`` is None, one right-padded row per example."""
    if max_tokens is None:
        return collate_padded(examples, pad_id)
    return collate_packed(examples, pack(examples, max_tokens), max_tokens, pad_id)
