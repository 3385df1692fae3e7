"""The one grammar for integers written in flags: bounded integer expressions and comma lists of them
(`--moduli`, `--bits_to_keep`, analyze.py's `--m`, `--a`, `--c`, `--positions`, `--attention`, the
benchmarks' seed lists).

    list   := entry (',' entry)*          empty entries are skipped: '1,2,' is [1, 2]
    entry  := expr                        or, where the caller reads ranges, lo '-' hi (below)
    expr   := numbers and '**' '*' '+' '-' '(' ')', as Python reads them (-2**2 is -4)
    number := decimal digits (leading zeros allowed), 0x.. 0o.. 0b.., '_' between digits

Every intermediate result stays within 2^64 and the value below 2^63, so the work is bounded whatever
the input. Where a caller reads ranges (seed lists), an entry of two plain numbers joined by '-' is the
range from the first to the second, both included ('1-5' is 1, 2, 3, 4, 5); elsewhere it is a
difference. Errors are ValueError naming the flag.
"""
from __future__ import annotations

import re

INT64_MAX = 2**63 - 1  # generator states, a, c and token values live in int64
MAX_EXPR_CHARS = 200  # one entry; far longer than any real one
MAX_EXPR_DEPTH = 32  # nested parentheses
MAX_RANGE = 10_000  # values one range entry may stand for (seed lists); far more than any real one

_NUMBER = r"0[xX](?:_?[0-9a-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|\d(?:_?\d)*"
_TOKEN = re.compile(rf"\s*(?:({_NUMBER})|(\*\*|[-+*()]))")
_RANGE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*")


def _number(text: str) -> int:
    digits = text.replace("_", "")
    return int(digits, 0) if digits[:2].lower() in ("0x", "0o", "0b") else int(digits, 10)


class _Expr:
    def __init__(self, text: str):
        self.tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unexpected {text[pos:pos + 10]!r}")
            self.tokens.append(_number(match.group(1)) if match.group(1) else match.group(2))
            pos = match.end()
        self.i, self.depth = 0, 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.i += 1
        return token

    @staticmethod
    def capped(value: int) -> int:  # intermediate results up to 2^64, so that 2**63-1 can be written
        if abs(value) > 2**64:
            raise ValueError("a result reaches 2^63 or more")
        return value

    def expr(self) -> int:  # term (('+' | '-') term)*
        value = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            value = self.capped(value + right if op == "+" else value - right)
        return value

    def term(self) -> int:  # unary ('*' unary)*
        value = self.unary()
        while self.peek() == "*":
            self.take()
            value = self.capped(value * self.unary())
        return value

    def unary(self) -> int:  # '-' unary | '+' unary | power
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            return sign * self.unary()
        return self.power()

    def power(self) -> int:  # atom ('**' unary)?  (right-associative; -2**2 = -4 as in Python)
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        exponent = self.unary()
        if exponent < 0:
            raise ValueError("a negative exponent")
        if abs(base) >= 2 and exponent > 64:  # |base|^65 > 2^64: too large, known before computing it
            raise ValueError("a result reaches 2^63 or more")
        return self.capped(base**exponent)

    def atom(self) -> int:
        token = self.take()
        if isinstance(token, int):
            return self.capped(token)
        if token == "(":
            self.depth += 1
            if self.depth > MAX_EXPR_DEPTH:
                raise ValueError("parentheses nested too deeply")
            value = self.expr()
            if self.take() != ")":
                raise ValueError("a '(' without ')'")
            self.depth -= 1
            return value
        raise ValueError("a number is missing" if token is None else f"unexpected {token!r}")


def int_expr(text: str) -> int:
    """Evaluate '2**18', '3*2**10+1', '(2**4)**2', '0x100' exactly (module docstring). Raises ValueError."""
    if len(text) > MAX_EXPR_CHARS:
        raise ValueError(f"longer than {MAX_EXPR_CHARS} characters")
    parser = _Expr(text)
    if not parser.tokens:
        raise ValueError("empty")
    value = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r}")
    if abs(value) > INT64_MAX:
        raise ValueError("a result reaches 2^63 or more")
    return value


def parse_int_list(text, flag: str, *, ranges: bool = False) -> list[int] | None:
    """'256,1024,2**12' -> [256, 1024, 4096] by the module's grammar (None stays None); with `ranges`,
    '1-3,9' -> [1, 2, 3, 9]. ValueError naming `flag` for an entry it cannot read or an empty list."""
    if text is None:
        return None
    values = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        span = _RANGE.fullmatch(part) if ranges else None
        if span:
            lo, hi = _number(span.group(1)), _number(span.group(2))
            if not 0 <= hi - lo < MAX_RANGE:
                raise ValueError(f"{flag}: the range {part.strip()!r} must run upwards over fewer than "
                                 f"{MAX_RANGE:,} values")
            values.extend(range(lo, hi + 1))
            continue
        try:
            values.append(int_expr(part))
        except ValueError as err:
            raise ValueError(f"{flag}: cannot read {part.strip()[:40]!r} as an integer expression ({err}; "
                             f"numbers, **, *, +, - and parentheses allowed, results below 2^63)") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values
