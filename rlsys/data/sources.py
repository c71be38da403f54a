"""Load training records from JSONL, JSON, Parquet or Hugging Face ``datasets`` into plain dicts.

Every record is a dict with canonical keys only (``CANONICAL_FIELDS``): ``fields`` maps
canonical names to the file's column names; without ``fields`` the canonical keys present in
each row are taken as they are. A malformed row (bad JSON, not an object, a missing mapped
field, a value of the wrong type) raises ``DataError`` naming the file, the 1-based line (JSONL)
or record/row number (JSON, Parquet, datasets) and the field -- or, with ``on_error="skip"``, is
skipped, counted in ``LoadedSource.skipped`` and logged once per source (never dropped silently).
Bytes that are not UTF-8 and a file without a single record (empty, blank lines only, or every
row skipped) are ``DataError``s too; ``DataError`` is a ``rlsys.errors.UserError``.

This module does not tokenize, template or shuffle anything.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rlsys.errors import UserError

logger = logging.getLogger(__name__)

CANONICAL_FIELDS = ("prompt", "response", "messages", "chosen", "rejected", "text", "answer")
FORMATS = ("jsonl", "json", "parquet", "hf_disk", "hf_json", "hf_parquet")
MESSAGE_ROLES = ("system", "user", "assistant", "tool")  # tool: an environment's observation
# What a record of each kind must hold: any one of the alternatives.
KIND_REQUIREMENTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "text": (("text",),),
    "sft": (("messages",), ("prompt", "response")),
    "pair": (("prompt", "chosen", "rejected"),),
    "prompt": (("prompt",),),
}
_MAX_ERRORS_KEPT = 5


class DataError(UserError, ValueError):
    """A data file or record is malformed; the message names the file, line/row and field."""


@dataclass
class LoadedSource:
    """Records read from one source.

    Attributes:
        records: list of dicts with canonical keys (see ``CANONICAL_FIELDS``).
        skipped: number of malformed rows skipped (``on_error="skip"``).
        errors: the first few error messages of skipped rows.
        name: the source name (``source_name`` or the file name).
        path: the path that was read.
    """

    records: list[dict[str, Any]]
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    name: str = ""
    path: str = ""


def detect_format(path: str) -> str:
    """Guess the format from the path: a directory is ``hf_disk``, else the file suffix."""
    if os.path.isdir(path):
        return "hf_disk"
    lowered = path.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
                        (".parquet", "parquet")):
        if lowered.endswith(suffix):
            return fmt
    raise DataError(f"{path}: cannot tell the format from the name; pass format= one of {FORMATS}")


def _check_message_list(value: Any, what: str) -> None:
    if not isinstance(value, list) or not value:
        raise TypeError(f"{what} must be a non-empty list of {{role, content}} objects")
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise TypeError(f"{what}[{turn}] must be an object with a string 'content'")
        if message.get("role") not in MESSAGE_ROLES:
            raise TypeError(f"{what}[{turn}].role must be one of {MESSAGE_ROLES}, "
                            f"got {message.get('role')!r}")


def chat_message(m: dict) -> dict:
    """``{role, content}`` of a message, plus the ``name`` of a tool message (the tool called),
    which chat templates may render."""
    out = {"role": m["role"], "content": m["content"]}
    if m["role"] == "tool" and isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _check_value(name: str, value: Any) -> Any:
    """Validate (and normalise) one canonical field; raises TypeError with a reason."""
    if name == "messages":
        _check_message_list(value, "messages")
        return [chat_message(m) for m in value]
    if name == "answer":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"must be a string or number, got {type(value).__name__}")
        return str(value)
    if name in ("prompt", "chosen", "rejected") and isinstance(value, list):
        _check_message_list(value, name)
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if not isinstance(value, str):
        raise TypeError(f"must be a string, got {type(value).__name__}")
    return value


def _check_kind(record: dict[str, Any], kind: str | None) -> None:
    if kind is None:
        return
    alternatives = KIND_REQUIREMENTS[kind]
    if not any(all(key in record for key in keys) for keys in alternatives):
        wanted = " or ".join("+".join(keys) for keys in alternatives)
        hint = ("; RL and eval prompts with answers are kind prompt"
                if kind != "prompt" and "prompt" in record and "answer" in record else "")
        raise _RowError(None, f"a {kind} record needs {wanted}; it has {sorted(record)}{hint}")


def _canonical(row: Any, fields: dict[str, str] | None) -> dict[str, Any]:
    """Map one raw row to a canonical record; raises (KeyError|TypeError, field) on a problem."""
    if not isinstance(row, dict):
        raise _RowError(None, f"row must be a JSON object, got {type(row).__name__}")
    mapping = fields if fields is not None else {k: k for k in CANONICAL_FIELDS if k in row}
    if not mapping:
        raise _RowError(None, f"row has none of the fields {CANONICAL_FIELDS}; pass fields=")
    record = {}
    for name, column in mapping.items():
        label = name if name == column else f"{name} (column {column!r})"
        if column not in row or row[column] is None:
            raise _RowError(label, "missing")
        try:
            record[name] = _check_value(name, row[column])
        except TypeError as err:
            raise _RowError(label, str(err)) from None
    return record


class _RowError(Exception):
    def __init__(self, field_label: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field_label = field_label
        self.reason = reason


def _not_utf8(path: str, line: int, byte: int, column: int) -> DataError:
    return DataError(f"{path}:line {line}: not UTF-8 text (byte {byte:#04x} at column "
                     f"{column}); re-encode the file as UTF-8")


def _iter_jsonl(path: str) -> Iterator[tuple[str, Any]]:
    # Read bytes and decode line by line, so a non-UTF-8 byte is reported with its line.
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, number, raw[err.start], err.start + 1) from None
            if not line.strip():
                continue  # blank lines are not records
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {number}", _BadJson(str(err))


class _BadJson:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _iter_json(path: str) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise _not_utf8(path, line, raw[err.start], column) from None
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:line {err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json source must hold a list of records")
    for number, row in enumerate(data, start=1):
        yield f"record {number}", row


def _iter_rows(rows: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    # Any: a row is checked to be a mapping where it is read, not here.
    for number, row in enumerate(rows, start=1):
        yield f"row {number}", row


def _iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())
        raise DataError(f"{path}: not a readable Parquet file ({reason})") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", row


def _iter_hf(path: str, fmt: str, split: str) -> Iterator[tuple[str, Any]]:
    import datasets

    if fmt == "hf_disk":
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path}: split {split!r} not found; splits: {list(loaded)}")
            loaded = loaded[split]
    else:
        builder = "json" if fmt == "hf_json" else "parquet"
        loaded = datasets.load_dataset(builder, data_files=path, split="train")
    return _iter_rows(iter(loaded))


def _rows(path: str, fmt: str, split: str) -> Iterator[tuple[str, Any]]:
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "json":
        return _iter_json(path)
    if fmt == "parquet":
        return _iter_parquet(path)
    return _iter_hf(path, fmt, split)


def load_records(
    path: str,
    *,
    format: str | None = None,  # noqa: A002 - the public keyword the callers use
    fields: dict[str, str] | None = None,
    on_error: str = "raise",
    source_name: str | None = None,
    split: str = "train",
    kind: str | None = None,
) -> LoadedSource:
    """Read ``path`` into canonical records (see the module docstring).

    Args:
        path: a .jsonl/.json/.parquet file or a ``save_to_disk`` directory.
        format: one of ``FORMATS``; guessed from ``path`` when None. ``hf_json`` and
            ``hf_parquet`` read local files through ``datasets.load_dataset``.
        fields: canonical name -> column name; every mapped column is required in every row.
        on_error: ``"raise"`` (first bad row raises ``DataError``) or ``"skip"`` (count it).
        source_name: name used in messages; defaults to the file name.
        split: the split of a saved ``DatasetDict``.
        kind: ``text``, ``sft``, ``pair`` or ``prompt``: also require the fields that kind
            needs (``KIND_REQUIREMENTS``); None checks only the mapped fields.

    Raises:
        DataError: a missing or non-UTF-8 file, a malformed row (``on_error="raise"``), or no
            record at all.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if kind is not None and kind not in KIND_REQUIREMENTS:
        raise ValueError(f"kind must be one of {sorted(KIND_REQUIREMENTS)}, got {kind!r}")
    if fields is not None:
        unknown = sorted(set(fields) - set(CANONICAL_FIELDS))
        if unknown:
            raise ValueError(f"fields: unknown canonical names {unknown}; known {CANONICAL_FIELDS}")
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    loaded = LoadedSource(records=[], name=source_name or os.path.basename(path.rstrip("/")),
                          path=path)
    for where, row in _rows(path, fmt, split):
        try:
            if isinstance(row, _BadJson):
                raise _RowError(None, f"invalid JSON ({row.reason})")
            record = _canonical(row, fields)
            _check_kind(record, kind)
            loaded.records.append(record)
        except _RowError as err:
            about = f", field {err.field_label}" if err.field_label else ""
            message = f"{path}:{where}{about}: {err.reason}"
            if on_error == "raise":
                raise DataError(message) from None
            loaded.skipped += 1
            if len(loaded.errors) < _MAX_ERRORS_KEPT:
                loaded.errors.append(message)
    if not loaded.records:
        raise DataError(_why_empty(path, loaded))
    if loaded.skipped:
        logger.warning("source %s: skipped %d malformed rows (first: %s)",
                       loaded.name, loaded.skipped, loaded.errors[0])
    return loaded


def _why_empty(path: str, loaded: LoadedSource) -> str:
    if loaded.skipped:
        return (f"{path}: no usable records: all {loaded.skipped} rows are malformed "
                f"(first: {loaded.errors[0]})")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return f"{path}: no records: the file is empty"
    return f"{path}: no records: the file holds no rows (only blank lines or an empty list)"
