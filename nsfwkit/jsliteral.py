"""Read the data literal inside nsfwjs's bundled model files without running any JavaScript.

nsfwjs ships its models as UMD modules whose payload is a JavaScript *object literal* (bare keys,
``!0``/``!1`` for booleans, ``.5`` for numbers) or a base64 string. This module extracts that
literal and parses it with a small recursive-descent parser that only understands data: objects,
arrays, strings, numbers, ``true``/``false``/``null`` and their minified spellings. Anything else
(function calls, identifiers used as values) is rejected, so a tampered bundle cannot run code.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["JSLiteralError", "parse_js_literal", "extract_exports_literal"]


class JSLiteralError(ValueError):
    """The text is not a pure JavaScript data literal."""


_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class _Parser:
    max_depth = 64  # nsfwjs's topologies nest about 8 deep

    def __init__(self, text: str, pos: int = 0):
        self.text = text
        self.pos = pos
        self.depth = 0

    def error(self, message: str) -> JSLiteralError:
        snippet = self.text[self.pos : self.pos + 40]
        return JSLiteralError(f"{message} at offset {self.pos}: {snippet!r}")

    def skip_ws(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in " \t\r\n":
            self.pos += 1

    def value(self) -> Any:
        self.skip_ws()
        if self.pos >= len(self.text):
            raise self.error("unexpected end of input")
        ch = self.text[self.pos]
        if ch in "{[":
            self.depth += 1
            if self.depth > self.max_depth:
                raise self.error(f"nested deeper than {self.max_depth} levels")
            try:
                return self.obj() if ch == "{" else self.arr()
            finally:
                self.depth -= 1
        if ch in "\"'":
            return self.string()
        if ch == "!" and self.text[self.pos + 1 : self.pos + 2] in ("0", "1"):
            self.pos += 2
            return self.text[self.pos - 1] == "0"  # !0 is true, !1 is false
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            token = match.group()
            is_int = not any(c in token for c in ".eE")
            return int(token) if is_int else float(token)
        match = _IDENT.match(self.text, self.pos)
        if match and match.group() in ("true", "false", "null"):
            self.pos = match.end()
            return {"true": True, "false": False, "null": None}[match.group()]
        if match and match.group() in ("Infinity", "NaN"):
            self.pos = match.end()
            return float("inf") if match.group() == "Infinity" else float("nan")
        raise self.error("not a data literal")

    def key(self) -> str:
        self.skip_ws()
        ch = self.text[self.pos : self.pos + 1]
        if ch in ("\"", "'"):
            return self.string()
        match = _IDENT.match(self.text, self.pos) or _NUMBER.match(self.text, self.pos)
        if not match:
            raise self.error("expected an object key")
        self.pos = match.end()
        return match.group()

    def expect(self, ch: str) -> None:
        self.skip_ws()
        if self.text[self.pos : self.pos + 1] != ch:
            raise self.error(f"expected {ch!r}")
        self.pos += 1

    def obj(self) -> dict:
        self.expect("{")
        out: dict = {}
        self.skip_ws()
        if self.text[self.pos : self.pos + 1] == "}":
            self.pos += 1
            return out
        while True:
            k = self.key()
            self.expect(":")
            out[k] = self.value()
            self.skip_ws()
            ch = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if ch == "}":
                return out
            if ch != ",":
                self.pos -= 1
                raise self.error("expected ',' or '}'")

    def arr(self) -> list:
        self.expect("[")
        out: list = []
        self.skip_ws()
        if self.text[self.pos : self.pos + 1] == "]":
            self.pos += 1
            return out
        while True:
            out.append(self.value())
            self.skip_ws()
            ch = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if ch == "]":
                return out
            if ch != ",":
                self.pos -= 1
                raise self.error("expected ',' or ']'")

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        parts = []
        text = self.text
        while True:
            end = self.pos
            while end < len(text) and text[end] not in (quote, "\\"):
                end += 1
            parts.append(text[self.pos : end])
            if end >= len(text):
                raise self.error("unterminated string")
            self.pos = end + 1
            if text[end] == quote:
                return "".join(parts)
            esc = text[self.pos : self.pos + 1]
            if esc in ("u", "x"):
                width = 4 if esc == "u" else 2
                digits = text[self.pos + 1 : self.pos + 1 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error(f"bad \\{esc} escape")
                parts.append(chr(int(digits, 16)))
                self.pos += 1 + width
            else:
                parts.append(_ESCAPES.get(esc, esc))
                self.pos += 1


def parse_js_literal(text: str, pos: int = 0) -> tuple[Any, int]:
    """Parse one JavaScript data literal starting at ``pos``.

    Returns:
        ``(value, end)``: the Python value (dict/list/str/int/float/bool/None) and the offset just
        after the literal.

    Raises:
        JSLiteralError: the text at ``pos`` is not a pure data literal.
    """
    parser = _Parser(text, pos)
    value = parser.value()
    return value, parser.pos


def extract_exports_literal(source: str, *, origin: str = "<bundle>") -> Any:
    """Return the literal assigned to ``module.exports`` (minified as ``X.exports=``) in a UMD file.

    Raises:
        JSLiteralError: no such assignment, or its value is not a pure data literal.
    """
    match = re.search(r"\b[A-Za-z_$][\w$]*\.exports\s*=\s*(?=[{\[\"'])", source)
    if not match:
        raise JSLiteralError(f"{origin}: no 'exports = <literal>' assignment found")
    try:
        value, _ = parse_js_literal(source, match.end())
    except JSLiteralError as exc:
        raise JSLiteralError(f"{origin}: {exc}") from None
    return value
