"""Tokenizer for final answers written in LaTeX or plain math.

Turns a short answer string into a list of ``Token`` objects (numbers, names, LaTeX commands,
operators and brackets). It enforces the input limits (length, token count) before any parsing.
It does not interpret anything: meaning is given by ``parser.py``; nothing here evaluates text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 1000
MAX_TOKENS = 600
MAX_NUMBER_DIGITS = 400


class AnswerError(ValueError):
    """The answer cannot be read: too long, too deep, unknown syntax or out of limits."""


@dataclass(frozen=True)
class Token:
    """One lexical unit: ``kind`` in {num, name, cmd, op, open, close, amp, rowsep, end}."""

    kind: str
    text: str


GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon",
    "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi",
    "Sigma", "Phi", "Psi", "Omega",
}

# LaTeX commands that are pure layout and carry no meaning in a final answer.
NOISE_COMMANDS = {
    "left", "right", "bigl", "bigr", "Bigl", "Bigr", "big", "Big", "displaystyle", "quad",
    "qquad", "limits", "middle", "textstyle", "mathstrut",
}
COMMAND_ALIASES = {
    "dfrac": "frac", "tfrac": "frac", "cfrac": "frac", "le": "leq", "ge": "geq", "leqslant": "leq",
    "geqslant": "geq", "ne": "neq", "lt": "<", "gt": ">", "cdot": "*", "times": "*", "ast": "*",
    "div": "/", "colon": ":", "lbrace": "\\{", "rbrace": "\\}", "vert": "|", "lvert": "|",
    "rvert": "|", "mid": "|", "land": "and", "wedge": "and", "lor": "or", "vee": "or",
    "dots": "ldots", "cdots": "ldots", "dotsc": "ldots", "dotsb": "ldots", "mp": "mp",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "varnothing": "emptyset",
    "langle": "(", "rangle": ")", "lceil": "ceil_open", "rceil": "ceil_close",
    "lfloor": "floor_open", "rfloor": "floor_close",
}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+(?![a-zA-Z]))? | \.\d+(?:[eE][+-]?\d+(?![a-zA-Z]))?)
  | (?P<cmd>\\[a-zA-Z]+\*?)
  | (?P<esc>\\[{}%$#&|!,;:>\ ]|\\\\)
  | (?P<rel><=|>=|!=|=<|=>|≤|≥|≠|<|>|=)
  | (?P<name>[a-zA-Z]|[α-ωΑ-Ω])
  | (?P<op>[-+*/^_!,;:'|&%]|−|×|·|÷|π|∞|√)
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
    """,
    re.VERBOSE,
)

_UNICODE = {"−": "-", "×": "*", "·": "*", "÷": "/", "≤": "leq", "≥": "geq", "≠": "neq",
            "<=": "leq", ">=": "geq", "=<": "leq", "=>": "geq", "!=": "neq", "π": "\\pi",
            "∞": "\\infty", "√": "\\sqrt"}


def tokenize(text: str) -> list[Token]:
    """Split an answer into tokens; raise ``AnswerError`` on limits or unknown characters."""
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerError(f"answer longer than {MAX_ANSWER_CHARS} characters")
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise AnswerError(f"unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup or ""  # every alternative of the pattern is a named group
        value = m.group()
        if kind == "ws":
            continue
        tok = _classify(kind, value)
        if tok is None:
            continue
        tokens.append(tok)
        if len(tokens) > MAX_TOKENS:
            raise AnswerError(f"answer has more than {MAX_TOKENS} tokens")
    tokens.append(Token("end", ""))
    return tokens


def _classify(kind: str, value: str) -> Token | None:
    """Map a regex match to a token, folding aliases and dropping layout-only commands."""
    value = _UNICODE.get(value, value)
    if kind == "num":
        if len(value) > MAX_NUMBER_DIGITS:
            raise AnswerError(f"number longer than {MAX_NUMBER_DIGITS} digits")
        return Token("num", value)
    if kind == "rel":
        return Token("rel", {"leq": "\\leq", "geq": "\\geq", "neq": "\\neq"}.get(value, value))
    if kind == "esc":
        if value in ("\\{", "\\}"):
            return Token("open" if value == "\\{" else "close", value)
        if value == "\\\\":
            return Token("rowsep", value)
        if value == "\\%":
            return Token("op", "%")
        if value == "\\|":
            return Token("op", "|")
        return None  # spacing (\! \, \; \: \ ) and \$ carry no meaning
    if kind == "cmd":
        return _command(value)
    if kind in ("open", "close", "name"):
        return Token(kind, value)
    if value.startswith("\\"):
        return _command(value)
    if value == "&":
        return Token("amp", value)
    return Token("op", value)


def _command(value: str) -> Token | None:
    name = value[1:].rstrip("*")
    if name in NOISE_COMMANDS:
        return None
    name = COMMAND_ALIASES.get(name, name)
    if name in ("leq", "geq", "neq", "<", ">"):
        return Token("rel", "\\" + name if name[0].isalpha() else name)
    if name in ("*", "/", ":", "|"):
        return Token("op", name)
    if name in ("(", ")"):
        return Token("open" if name == "(" else "close", name)
    if name in ("\\{", "\\}"):
        return Token("open" if name == "\\{" else "close", name)
    if name in GREEK:
        return Token("name", name)
    return Token("cmd", name)
