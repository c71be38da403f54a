"""Find the final answer in a model response and strip LaTeX noise from it.

``extract_answer`` looks, in order, for the last ``\\boxed{}``/``\\fbox{}`` (boxes joined only by
"and"/commas are merged into one list), a GSM8K ``#### x`` line, "the (final) answer is x",
the last inline math span (``$..$``, ``\\(..\\)``, ``\\[..\\]``), a short answer-like text, and
finally the last number. ``clean_answer`` removes layout and units text so the parser sees
mathematics only. Pure string work (regular expressions and brace matching): nothing here
evaluates or parses mathematics.
"""

from __future__ import annotations

import re

MAX_RAW_CHARS = 1_000_000
_TAIL_CHARS = 20_000  # answers sit at the end; older text is never scanned
MAX_EXTRACTED_CHARS = 1000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_BOX_JOIN_RE = re.compile(
    r"^(?:\s|,|;|\$|\\\(|\\\)|\\\[|\\\]|\\quad|\\qquad|\\,|\\text\{\s*(?:and|or)\s*\}|and|or|&)*$")
_ANSWER_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=|\bis\s*:)\s*:?\s*(.+)", re.IGNORECASE)
_PHRASE_POS_RE = re.compile(r"answer\s*(?:is\b|:)", re.IGNORECASE)
_GSM_RE = re.compile(r"####\s*([^\n]+)")
_DELIM_RE = re.compile(r"(?<!\\)\$\$|\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")
_CLOSING = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_NUMBER_RE = re.compile(
    r"\\frac\{-?\d+\}\{\d+\}|-?\d+/\d+|-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?(?!\d)"
    r"|-?\d+(?:[.,]\d+)?|-?\.\d+")
_DECIMAL_COMMA_RE = re.compile(r"-?\d+,\d{1,2}|-?0,\d+|-?\d{4,},\d+")
_PLAIN_TEXT_RE = re.compile(r"[\x00-\x7f²³°π√∞≤≥−×·÷]*")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname|rm|bf)"
    r"\s*\{([^{}]*)\}")
_TRAILING_NOISE_RE = re.compile(r"(?:[.。]|\\\\|\\)+\s*$")
_PERCENT_WORD_RE = re.compile(r"\s*(?:\\%|%|\bpercentage\b|\bpercent\b|\bpct\b)")
_UNIT_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\.?(?:\s*\^\s*\{?\d\}?|[²³])?\s*$")
_LEAD_RE = re.compile(r"^\s*(?:[A-Za-z](?:_\{?\w+\}?)?\s*(?:\\in|∈)\s*)")
_REPEATING_RE = re.compile(r"(\d*)\.(\d*)\\overline\s*\{(\d{1,20})\}")
_APPROX_RE = re.compile(r"\\approx|≈|\\sim(?![a-z])")


def extract_answer(text: str) -> str | None:
    """Return the final answer of ``text`` (cleaned), or None when none is found.

    Raw text over 1 MB is rejected at once; only its last 20,000 characters are scanned.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_RAW_CHARS:
        return None
    tail = text[-_TAIL_CHARS:]
    finders = [last_boxed, _gsm8k, _answer_phrase, _last_math_span, _short_text, _last_number]
    if _phrase_after_last_box(tail):  # "\boxed{200} ... Final Answer: the answer is 10,455"
        finders = [_answer_phrase] + finders
    for finder in finders:
        found = finder(tail)
        if found is not None and found.strip():
            cleaned = clean_answer(found)
            if cleaned and len(cleaned) <= MAX_EXTRACTED_CHARS:
                return cleaned
    return None


def _phrase_after_last_box(text: str) -> bool:
    last_phrase = None
    for m in _PHRASE_POS_RE.finditer(text):
        last_phrase = m.start()
    if last_phrase is None:
        return False
    last_box = text.rfind("\\boxed")
    return 0 <= last_box < last_phrase


def has_boxed(text: str) -> bool:
    """True when ``text`` contains a ``\\boxed``/``\\fbox`` answer."""
    return isinstance(text, str) and last_boxed(text[-_TAIL_CHARS:]) is not None


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each ``{`` -> its ``}`` in one linear pass (``\\{`` is not a brace)."""
    match: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return match


def _boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every ``\\boxed{..}`` / ``\\boxed x`` as (start, end, content), brace-balanced."""
    spans = []
    match = None
    for m in _BOX_RE.finditer(text):
        start, pos = m.start(), m.end()
        if pos < len(text) and text[pos] == "{":
            match = _matching_braces(text) if match is None else match
            close = match.get(pos)
            if close is not None:
                spans.append((start, close + 1, text[pos + 1:close]))
        else:
            word = re.match(r"[^\s$]+", text[pos:pos + 200])
            if word and m.group().endswith(" "):
                spans.append((start, pos + word.end(), word.group()))
    return spans


def last_boxed(text: str) -> str | None:
    """Content of the last box; boxes separated only by commas/"and" are joined with commas."""
    spans = _boxed_spans(text)
    if not spans:
        return None
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        if _BOX_JOIN_RE.match(text[span[1]:group[0][0]]):
            group.insert(0, span)
        else:
            break
    return ",".join(s[2] for s in group)


def _gsm8k(text: str) -> str | None:
    found = _GSM_RE.findall(text)
    return found[-1] if found else None


def _answer_phrase(text: str) -> str | None:
    found = None
    for m in _ANSWER_RE.finditer(text):
        found = m.group(1)
    if found is None:
        return None
    inner = _ANSWER_RE.search(found)
    while inner is not None:
        found = inner.group(1)
        inner = _ANSWER_RE.search(found)
    found = re.split(r"\n|\.\s|\. *$|I hope|<\|", found)[0]
    found = re.split(r"\b(?:is|are)\b", found)[-1]
    span = _last_math_span(found)
    if span is not None:
        return span
    number = re.fullmatch(r"\s*\*{0,2}\s*([^*]+?)\s*\*{0,2}\s*", found)
    found = number.group(1) if number else found
    if _short_text(found) is None:  # prose such as "Jane started 3 hours ago"
        return _last_number(found)
    return found


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    """Math spans ``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]`` in one linear scan."""
    spans = []
    opener, open_end, open_start = None, 0, 0
    for m in _DELIM_RE.finditer(text):
        token = m.group()
        if opener is None:
            if token in _CLOSING:
                opener, open_start, open_end = token, m.start(), m.end()
        elif token == _CLOSING[opener]:
            spans.append((open_start, m.end(), text[open_end:m.start()]))
            opener = None
    return spans


def _last_math_span(text: str) -> str | None:
    """The last math span; spans separated only by commas/"and"/"or" are joined."""
    spans = _math_spans(text)
    if not spans:
        return None
    group = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[1]:group[0][0]]
        if gap.strip() and _BOX_JOIN_RE.match(gap):
            group.insert(0, span)
        else:
            break
    return ",".join(s[2] for s in group)


def _short_text(text: str) -> str | None:
    """The whole text when it looks like a bare answer (short, at most two plain words)."""
    stripped = text.strip()
    if len(stripped) > 200 or "\n" in stripped or not _PLAIN_TEXT_RE.fullmatch(stripped):
        return None
    if _DECIMAL_COMMA_RE.fullmatch(stripped):
        return stripped.replace(",", ".")
    words = re.findall(r"(?<![\\A-Za-z])[A-Za-z]{2,}", stripped)
    return stripped if len(words) <= 3 else None


def _last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    value = found[-1]
    if _DECIMAL_COMMA_RE.fullmatch(value):
        value = value.replace(",", ".")  # a decimal comma (1000,99 or 0,111), not thousands
    return value


def clean_answer(answer: str) -> str:
    """Strip layout, dollar signs, ``\\text{}`` wrappers, degrees, units and trailing dots."""
    s = answer.strip()
    if len(s) > MAX_EXTRACTED_CHARS * 4:
        return s[:MAX_EXTRACTED_CHARS * 4]  # too long to be an answer; callers reject it
    s = re.sub(r"\\\\(?=[a-zA-Z{}])", r"\\", s)  # doubly escaped LaTeX (\\frac)
    s = s.replace("\\$", " ").replace("$", " ").replace("\\%", "%")
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ\b|\\degree\b", "", s)
    s = re.sub(r"\\(?:displaystyle|left|right|big|Big|bigl|bigr)(?![a-zA-Z])", "", s)
    s = re.sub(r"(?<=\d)(?:,\s*\\!|\s*\{\s*,\s*\}|,\s*\{\s*\})\s*(?=\d{3}(?!\d))", "", s)
    s = re.sub(r"\\q?quad", " ", s)
    s = _REPEATING_RE.sub(_repeating_decimal, s)
    s = re.sub(r"(?<=[)\]}])\s*(?:or|and)\s*(?=[(\[{])", ",", s)
    s = re.sub(r"(?<!\\)\\[,;:! ]|~", " ", s)
    for _ in range(3):  # nested \text{\textbf{..}}
        s = _TEXT_CMD_RE.sub(lambda m: " " + m.group(1).strip() + " ", s)
    if re.fullmatch(r"\s*-?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*", s):
        s = s.replace(",", "")  # 7,425,000; a comma with another group size is a list
    s = _APPROX_RE.split(s)[0] if not _is_name_only(_APPROX_RE.split(s)[0]) else s
    s = _PERCENT_WORD_RE.sub("%", s)
    s = re.sub(r"\s+(?:and|or)\s+|\s*,\s*(?:and|or)\s+", ",", s)
    s = _LEAD_RE.sub("", s)
    s = _TRAILING_NOISE_RE.sub("", s).strip()
    s = _strip_units(s)
    s = re.sub(r"^(\d{1,3}(?: \d{3})+)$", lambda m: m.group(1).replace(" ", ""), s)
    s = re.sub(r"^(-?)(\d+)\s*\\frac\s*\{?(\d)\}?\s*\{?(\d+)\}?$|^(-?)(\d+)\s+(\d+)/(\d+)$",
               _mixed_number, s)
    return _TRAILING_NOISE_RE.sub("", s).strip(" ,;")


def _strip_units(s: str) -> str:
    """Drop up to four trailing unit words (``cm^2``, ``square units``) after a number."""
    for _ in range(4):
        m = _UNIT_WORD_RE.search(s)
        if m is None:
            return s
        head = s[:m.start()].rstrip()
        if not re.search(r"\d", head) or not (head[-1] in "0123456789})" or head[-1].isalpha()):
            return s
        s = head
    return s


def _repeating_decimal(m: re.Match) -> str:
    """``0.1\\overline{6}`` -> ``(1/6)``: an exact fraction for a repeating decimal."""
    whole, fixed, repeat = m.group(1) or "0", m.group(2), m.group(3)
    k, r = len(fixed), len(repeat)
    numerator = (int(whole + fixed + repeat) - int(whole + fixed or "0"))
    denominator = 10**k * (10**r - 1)
    return f"({numerator}/{denominator})"


def _mixed_number(m: re.Match) -> str:
    """``1\\frac12`` or ``1 1/2`` -> ``(1+1/2)`` (a whole answer that is a mixed number)."""
    sign, whole, num, den = [g for g in m.groups() if g is not None] if m.group(2) is None \
        else m.groups()[:4]
    return f"{sign}({whole}+{num}/{den})"


def _is_name_only(text: str) -> bool:
    return re.fullmatch(r"\s*[A-Za-z](?:_\{?\w+\}?)?\s*", text) is not None


#: a number written out: optional sign, digits (groups of 3 may be split by , or thin spaces),
#: optional decimals
_NUMERAL = re.compile(r"[+-]?\d{1,3}(?:(?:,|\\,|\s)?\d{3})*(?:\.\d+)?|[+-]?\d+(?:\.\d+)?")


def is_numeral(text: str) -> bool:
    """True when ``text`` (an extracted final answer) is a number written out in digits, not an
    expression for the verifier to compute."""
    return _NUMERAL.fullmatch(text.strip().strip("$").strip()) is not None
