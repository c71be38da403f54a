"""Plain-data wire codec shared by the judge and the candidate agent (runs inside the sandbox).

Only values of exact builtin types (None, bool, int, float, str, bytes, complex, list, tuple,
dict, set, frozenset) are copied across; anything else travels as a reference number, so no
object defined by the candidate ever exists in the judge's process. One message is one JSON
line. This file is stdlib-only: the sandbox bootstrap (``runner._source``) installs it as module
``_codec`` before running ``_agent.py`` or ``_judge.py``; the host never imports it.
"""

import json
import os

MAX_LINE = 8 << 20  # bytes in one message; a longer reply is an "output" verdict
_SAFE_INT = 1 << 53


def encode(value, to_ref):
    """Turn ``value`` into JSON-able data; non-plain objects become ``{"$": "ref"}``."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_SAFE_INT < value < _SAFE_INT else {"$": "int", "v": hex(value)}
    if t is float:
        return value if value - value == 0.0 else {"$": "float", "v": repr(value)}
    if t is list:
        return [encode(item, to_ref) for item in value]
    if t is tuple or t is set or t is frozenset:
        return {"$": t.__name__, "v": [encode(item, to_ref) for item in value]}
    if t is dict:
        pairs = [[encode(k, to_ref), encode(v, to_ref)] for k, v in value.items()]
        return {"$": "dict", "v": pairs}
    if t is bytes:
        return {"$": "bytes", "v": value.hex()}
    if t is complex:
        return {"$": "complex", "v": [encode(value.real, to_ref), encode(value.imag, to_ref)]}
    return {"$": "ref", "v": to_ref(value)}


def decode(data, from_ref):
    """Inverse of ``encode``; raises ValueError on anything that is not a valid message."""
    t = type(data)
    if data is None or t is bool or t is str or t is int or t is float:
        return data
    if t is list:
        return [decode(item, from_ref) for item in data]
    if t is not dict or set(data) != {"$", "v"}:
        raise ValueError("malformed value")
    tag, v = data["$"], data["v"]
    if tag == "int" and type(v) is str:
        return int(v, 16)
    if tag == "float" and v in ("nan", "inf", "-inf"):
        return float(v)
    if tag == "bytes" and type(v) is str:
        return bytes.fromhex(v)
    if tag == "ref" and type(v) is int:
        return from_ref(v)
    if type(v) is not list:
        raise ValueError("malformed value")
    items = [decode(item, from_ref) for item in v]
    if tag == "tuple":
        return tuple(items)
    if tag == "set":
        return set(items)
    if tag == "frozenset":
        return frozenset(items)
    if tag == "complex" and len(items) == 2:
        return complex(items[0], items[1])
    if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
        return {k: val for k, val in items}
    raise ValueError("malformed value")


def send(fd, message):
    """Write one JSON line to ``fd`` (loops over partial pipe writes)."""
    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class LineReader:
    """Reads JSON lines from a pipe; ``recv`` returns None at EOF, raises OverflowError if long."""

    def __init__(self, fd):
        self._file = open(fd, "rb", buffering=1 << 16, closefd=False)

    def recv(self):
        """The next message, or None at end of file."""
        line = self._file.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE:
            raise OverflowError(f"message longer than {MAX_LINE} bytes")
        return json.loads(line)


def read_all(fd):
    """Read a whole (memfd) file descriptor as text and close it."""
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")
