"""Recursive-descent parser from answer tokens to a small tuple AST.

The AST is plain tuples such as ``("bin", "+", a, b)``, ``("num", "1.5")``, ``("tuple", items,
"(", "]")``; ``compare.py`` turns it into sympy objects from a whitelist. Only the commands
listed here are understood; anything else raises ``AnswerError``. Nesting depth is limited.
This module never evaluates anything and imports no sympy.
"""

from __future__ import annotations

from rewards.math.lexer import AnswerError, Token, tokenize

MAX_DEPTH = 100
FUNCTIONS = {"sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "sinh", "cosh",
             "tanh", "log", "ln", "exp", "lg"}
CONSTANTS = {"pi": "pi", "infty": "oo", "infin": "oo", "emptyset": "emptyset",
             "ldots": "ldots", "imath": "I"}
WRAPPERS = {"overline", "vec", "hat", "bar", "mathbf", "boldsymbol", "widehat", "tilde",
            "overrightarrow", "mathcal", "mathbb", "underline", "boxed", "fbox"}
MATRIX_ENVS = {"pmatrix", "bmatrix", "matrix", "Bmatrix", "vmatrix", "smallmatrix", "array"}
ROW_ENVS = {"cases", "aligned", "align", "align*", "gathered", "split", "eqnarray"}
RELATIONS = {"=", "<", ">", "\\leq", "\\geq", "\\neq", "approx", "in", "equiv", "sim"}
_CLOSERS = {"(": ")", "[": "]", "{": "}", "\\{": "\\}"}


def parse(text: str) -> tuple:
    """Parse a cleaned answer into an AST; raise ``AnswerError`` when it is not understood."""
    return _Parser(tokenize(text)).parse_all()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.abs_depth = 0

    # -- helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        """The current token."""
        return self.tokens[self.pos]

    def next(self) -> Token:
        """Consume and return the current token."""
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def is_(self, kind: str, text: str | None = None) -> bool:
        """True when the current token has this kind (and text)."""
        return self.tok.kind == kind and (text is None or self.tok.text == text)

    def expect(self, kind: str, text: str | None = None) -> Token:
        """Consume a token of this kind/text or raise."""
        if not self.is_(kind, text):
            raise AnswerError(f"expected {text or kind}, found {self.tok.text!r}")
        return self.next()

    def enter(self) -> None:
        """One level deeper; refuse past MAX_DEPTH."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise AnswerError(f"nesting deeper than {MAX_DEPTH}")

    # -- grammar -------------------------------------------------------------------------
    def parse_all(self) -> tuple:
        """answer := seq END"""
        node = self.seq()
        if not self.is_("end"):
            raise AnswerError(f"unexpected {self.tok.text!r}")
        return node

    def seq(self) -> tuple:
        """item ((',' | ';') item)* -> a list node when there is more than one item."""
        items = [self.rel()]
        while self.is_("op", ",") or self.is_("op", ";"):
            self.next()
            if self.is_("end") or self.tok.kind == "close":
                break
            items.append(self.rel())
        return items[0] if len(items) == 1 else ("list", items)

    def rel(self) -> tuple:
        """rel := ratio (RELOP ratio)*  (chains such as a < x < b)"""
        parts = [self.ratio()]
        ops: list[str] = []
        while self.tok.kind == "rel" or (self.tok.kind == "cmd" and self.tok.text in RELATIONS):
            ops.append(self.next().text)
            parts.append(self.ratio())
        return parts[0] if not ops else ("rel", ops, parts)

    def ratio(self) -> tuple:
        """ratio := union (':' union)*"""
        parts = [self.union()]
        while self.is_("op", ":"):
            self.next()
            parts.append(self.union())
        return parts[0] if len(parts) == 1 else ("ratio", parts)

    def union(self) -> tuple:
        """union := additive (('\\cup'|'\\cap'|'\\setminus') additive)*"""
        node = self.additive()
        while self.is_("cmd", "cup") or self.is_("cmd", "cap") or self.is_("cmd", "setminus"):
            op = self.next().text
            node = (op, node, self.additive())
        return node

    def additive(self) -> tuple:
        """additive := term (('+'|'-'|'\\pm'|'\\mp') term)*"""
        node = self.term()
        while self.is_("op", "+") or self.is_("op", "-") or self.is_("cmd", "pm") \
                or self.is_("cmd", "mp"):
            op = self.next().text
            rhs = self.term()
            node = ("pm", node, rhs) if op in ("pm", "mp") else ("bin", op, node, rhs)
        return node

    def term(self) -> tuple:
        """term := unary (('*'|'/') unary | implicit-product postfix)*"""
        node = self.unary()
        while True:
            if self.is_("op", "*") or self.is_("op", "/"):
                op = self.next().text
                node = ("bin", op, node, self.unary())
            elif self.starts_primary():
                node = ("bin", "*", node, self.postfix())
            else:
                return node

    def unary(self) -> tuple:
        """unary := ('-'|'+'|'\\pm') unary | postfix"""
        if self.is_("op", "-"):
            self.next()
            return ("neg", self.unary())
        if self.is_("op", "+"):
            self.next()
            return self.unary()
        if self.is_("cmd", "pm") or self.is_("cmd", "mp"):
            self.next()
            return ("upm", self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        """postfix := power ('!'|'%'|"'")*"""
        self.enter()
        node = self.power()
        while self.is_("op", "!") or self.is_("op", "%") or self.is_("op", "'"):
            op = self.next().text
            node = ("fact", node) if op == "!" else ("pct", node) if op == "%" else \
                ("name", _name_of(node) + "'")
        self.depth -= 1
        return node

    def power(self) -> tuple:
        """power := primary ('^' arg)*"""
        node = self.primary()
        while self.is_("op", "^"):
            self.next()
            if self.is_("op", "-"):
                self.next()
                node = ("pow", node, ("neg", self.arg()))
            else:
                node = ("pow", node, self.arg())
        return node

    def starts_primary(self) -> bool:
        """True when the next token can begin an implicit product factor."""
        tok = self.tok
        if tok.kind in ("num", "name"):
            return True
        if tok.kind == "open":
            return True
        if tok.kind == "op" and tok.text == "|":
            return self.abs_depth == 0
        return tok.kind == "cmd" and tok.text not in RELATIONS | {"cup", "cap", "setminus",
                                                                  "pm", "mp", "end"}

    def arg(self) -> tuple:
        """A command argument: a braced group or a single digit / name / command."""
        if self.is_("open", "{"):
            self.next()
            node = self.seq()
            self.expect("close", "}")
            return node
        if self.is_("num"):
            text = self.tok.text
            if len(text) > 1 and text[0].isdigit():  # \frac12 -> 1, 2
                self.tokens[self.pos] = Token("num", text[1:])
                return ("num", text[0])
            return ("num", self.next().text)
        if self.is_("op", "-"):
            self.next()
            return ("neg", self.arg())
        return self.primary()

    def primary(self) -> tuple:
        """primary := number | name | bracket | |additive| | command"""
        tok = self.tok
        if tok.kind == "num":
            self.next()
            return self.subscript(("num", tok.text))
        if tok.kind == "name":
            self.next()
            return self.subscript(("name", tok.text))
        if tok.kind == "open":
            return self.bracket()
        if tok.kind == "op" and tok.text == "|":
            self.next()
            self.abs_depth += 1
            inner = self.additive()
            self.abs_depth -= 1
            self.expect("op", "|")
            return ("abs", inner)
        if tok.kind == "cmd":
            return self.command()
        raise AnswerError(f"unexpected {tok.text!r}")

    def subscript(self, node: tuple) -> tuple:
        """``x_1`` becomes the name ``x_1``; ``4210_7`` a number in base 7."""
        if not self.is_("op", "_"):
            return node
        self.next()
        start = self.pos
        self.arg()
        sub = "".join(t.text for t in self.tokens[start:self.pos])
        if node[0] == "num":
            return ("based", node[1], sub.strip("{}"))
        return ("name", f"{node[1]}_{sub.strip('{}')}")

    def bracket(self) -> tuple:
        """(..), [..], (..], {..}, \\{..\\}: a group, tuple, interval or set."""
        self.enter()
        opener = self.next().text
        if self.tok.kind == "close":  # () or \{\}
            closer = self.next().text
            self.depth -= 1
            return ("set", []) if opener == "\\{" else ("tuple", [], opener, closer)
        saved_abs, self.abs_depth = self.abs_depth, 0
        inner = self.seq()
        self.abs_depth = saved_abs
        if self.tok.kind != "close":
            raise AnswerError(f"unclosed {opener!r}")
        closer = self.next().text
        self.depth -= 1
        items = inner[1] if inner[0] == "list" else [inner]
        if opener in ("{", "\\{"):
            if opener == "{" and len(items) == 1:
                return inner
            return ("set", items)
        if len(items) == 1 and opener == "(" and closer == ")":
            return ("group", inner)
        if len(items) == 1 and opener == "[" and closer == "]":
            return ("group", inner)
        return ("tuple", items, opener, closer)

    def command(self) -> tuple:
        """A whitelisted LaTeX command: constants, \\frac, \\binom, \\sqrt, functions."""
        name = self.next().text
        if name in CONSTANTS:
            return ("const", CONSTANTS[name])
        if name == "frac":
            return ("bin", "/", self.arg(), self.arg())
        if name in ("binom", "dbinom", "tbinom", "choose"):
            return ("binom", self.arg(), self.arg())
        if name == "sqrt":
            index = None
            if self.is_("open", "["):
                self.next()
                index = self.additive()
                self.expect("close", "]")
            return ("sqrt", self.arg(), index)
        if name in FUNCTIONS:
            return self.function(name)
        if name in WRAPPERS:
            return self.arg()
        if name == "begin":
            return self.environment()
        raise AnswerError(f"unsupported command \\{name}")

    def function(self, name: str) -> tuple:
        """``\\sin x``, ``\\sin^2(x)``, ``\\log_2 8``: name, optional base/power, argument."""
        base = power = None
        if self.is_("op", "_"):
            self.next()
            base = self.arg()
        if self.is_("op", "^"):
            self.next()
            power = self.arg()
        if self.is_("open", "("):
            argument = self.power()
        else:
            argument = self.power()
            while self.tok.kind in ("num", "name") or (self.is_("cmd") and self.tok.text in
                                                       CONSTANTS):
                argument = ("bin", "*", argument, self.power())
        return ("func", name, argument, power, base)

    def environment(self) -> tuple:
        """``\\begin{pmatrix}..\\end{pmatrix}`` (matrix) or cases/aligned (a list)."""
        env = self._group_text()
        if env == "array" and self.is_("open", "{"):
            self._group_text()
        rows: list[list[tuple]] = [[]]
        while not self.is_("cmd", "end"):
            if self.is_("end"):
                raise AnswerError(f"missing \\end{{{env}}}")
            if self.is_("amp"):
                self.next()
                continue
            if self.is_("rowsep"):
                self.next()
                rows.append([])
                continue
            rows[-1].append(self.rel())
        self.next()
        self._group_text()
        rows = [r for r in rows if r]
        if env in MATRIX_ENVS:
            if not rows or len({len(r) for r in rows}) != 1:
                raise AnswerError("ragged matrix")
            return ("matrix", rows)
        if env in ROW_ENVS:
            return ("list", [cell for r in rows for cell in r])
        raise AnswerError(f"unsupported environment {env!r}")

    def _group_text(self) -> str:
        self.expect("open", "{")
        parts = []
        while not self.is_("close", "}"):
            if self.is_("end"):
                raise AnswerError("unclosed group")
            parts.append(self.next().text)
        self.next()
        return "".join(parts)


def _name_of(node: tuple) -> str:
    if node[0] == "name":
        return node[1]
    raise AnswerError("prime on a non-name")
