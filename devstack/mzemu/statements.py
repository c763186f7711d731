"""The statements the emulator answers itself, parsed with Materialize's grammar.

``split_statements`` cuts a simple-query string at top-level semicolons;
``parse_statement`` recognises transaction control, SET/SHOW/RESET, DECLARE, FETCH,
CLOSE, SUBSCRIBE, COPY (SUBSCRIBE ...) TO STDOUT, ``SELECT mz_now()`` and the
``mzemu_*`` admin calls, and returns :class:`PassThrough` for everything else (which
the session forwards to PostgreSQL). SUBSCRIBE follows Materialize's parser:
``SUBSCRIBE [TO] <name | (query)> [output] [WITH (...)] [AS OF [AT LEAST] e]
[UP TO e] [output]`` where output is ``ENVELOPE UPSERT (KEY (...))``.
Pure module: no I/O. Errors are MzError with SQLSTATE 42601 (syntax) or 0A000.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from devstack.mzemu.errors import MzError, syntax_error

__all__ = [
    "Admin",
    "Begin",
    "Close",
    "Commit",
    "CopySubscribe",
    "Declare",
    "Fetch",
    "MzNow",
    "PassThrough",
    "ResetVar",
    "Rollback",
    "SetVar",
    "ShowVar",
    "Statement",
    "Subscribe",
    "TimestampExpr",
    "Token",
    "parse_interval_ms",
    "parse_statement",
    "split_statements",
    "tokenize",
]


@dataclass(frozen=True)
class Token:
    kind: str  # ident, qident, keyword-ish idents are "ident"; number, string, param, op
    text: str  # identifiers lowercased unless quoted; strings unescaped
    start: int
    end: int


_OPS = ("::", "<=", ">=", "<>", "!=", "||")


_NUMBER = re.compile(r"\d*\.?\d*(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*")
_PARAM = re.compile(r"\$(\d+)")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def tokenize(sql: str) -> list[Token]:
    """Lex ``sql`` (comments dropped). Raises MzError 42601 on an unterminated literal."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c in "eE" and i + 1 < n and sql[i + 1] == "'":
            text, j = _lex_string(sql, i + 1, backslash=True)
            tokens.append(Token("string", text, i, j))
            i = j
        elif c == "'":
            text, j = _lex_string(sql, i, backslash=False)
            tokens.append(Token("string", text, i, j))
            i = j
        elif c == '"':
            tok = _lex_quoted_ident(sql, i)
            tokens.append(tok)
            i = tok.end
        elif c == "$":
            tok = _lex_dollar(sql, i)
            tokens.append(tok)
            i = tok.end
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            m = _NUMBER.match(sql, i)
            assert m is not None
            tokens.append(Token("number", m.group(0), i, m.end()))
            i = m.end()
        elif c.isalpha() or c == "_":
            m = _WORD.match(sql, i)
            assert m is not None
            tokens.append(Token("ident", m.group(0).lower(), i, m.end()))
            i = m.end()
        else:
            op = next((o for o in _OPS if sql.startswith(o, i)), c)
            tokens.append(Token("op", op, i, i + len(op)))
            i += len(op)
    return tokens


def _skip_block_comment(sql: str, i: int) -> int:
    depth, j, n = 1, i + 2, len(sql)
    while j < n and depth:
        if sql.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif sql.startswith("*/", j):
            depth, j = depth - 1, j + 2
        else:
            j += 1
    if depth:
        raise syntax_error("unterminated multiline comment", i + 1)
    return j


def _lex_quoted_ident(sql: str, i: int) -> Token:
    j, n = i + 1, len(sql)
    parts = []
    while True:
        k = sql.find('"', j)
        if k < 0:
            raise syntax_error("unterminated quoted identifier", i + 1)
        parts.append(sql[j:k])
        if k + 1 < n and sql[k + 1] == '"':
            parts.append('"')
            j = k + 2
            continue
        return Token("qident", "".join(parts), i, k + 1)


def _lex_dollar(sql: str, i: int) -> Token:
    m = _PARAM.match(sql, i)
    if m:
        return Token("param", m.group(1), i, m.end())
    m = _DOLLAR_TAG.match(sql, i)
    if not m:
        return Token("op", "$", i, i + 1)
    tag = m.group(0)
    k = sql.find(tag, m.end())
    if k < 0:
        raise syntax_error("unterminated dollar-quoted string", i + 1)
    return Token("string", sql[m.end() : k], i, k + len(tag))


def _lex_string(sql: str, i: int, backslash: bool) -> tuple[str, int]:
    """A single-quoted literal starting at ``sql[i] == "'"``; returns (value, end)."""
    out: list[str] = []
    j, n = i + 1, len(sql)
    while j < n:
        c = sql[j]
        if c == "'":
            if j + 1 < n and sql[j + 1] == "'":
                out.append("'")
                j += 2
                continue
            return "".join(out), j + 1
        if backslash and c == "\\" and j + 1 < n:
            nxt = sql[j + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(nxt, nxt))
            j += 2
            continue
        out.append(c)
        j += 1
    raise syntax_error("unterminated quoted string", i + 1)


def split_statements(sql: str) -> list[str]:
    """Top-level statements of a simple query, trimmed, empty ones dropped."""
    pieces: list[str] = []
    start = 0
    depth = 0
    for tok in tokenize(sql):
        if tok.kind == "op" and tok.text == "(":
            depth += 1
        elif tok.kind == "op" and tok.text == ")":
            depth = max(0, depth - 1)
        elif tok.kind == "op" and tok.text == ";" and depth == 0:
            pieces.append(sql[start : tok.start])
            start = tok.end
    pieces.append(sql[start:])
    return [p.strip() for p in pieces if _has_tokens(p)]


def _has_tokens(piece: str) -> bool:
    return bool(tokenize(piece))


# --- statement forms -------------------------------------------------------------------


@dataclass(frozen=True)
class TimestampExpr:
    """``AS OF``/``UP TO`` operand: a sum of integer terms, ``mz_now()`` and ``$n``."""

    terms: tuple[tuple[int, str, str], ...]  # (sign, "int" | "now" | "param", value)

    def evaluate(self, now: int, params: tuple[str | None, ...] = ()) -> int:
        total = 0
        for sign, kind, value in self.terms:
            if kind == "int":
                total += sign * int(value)
            elif kind == "now":
                total += sign * now
            else:
                index = int(value) - 1
                if index >= len(params) or params[index] is None:
                    raise MzError("22023", f"no value supplied for parameter ${value}")
                total += sign * int(str(params[index]).split(".")[0])
        if total < 0 or total >= 1 << 64:
            raise MzError("22003", f"mz_timestamp out of range: {total}")
        return total


@dataclass(frozen=True)
class Subscribe:
    relation: str  # view name (last name part, lowercased unless quoted) or ""
    query: str  # the text inside the parentheses for SUBSCRIBE (SELECT ...), else ""
    snapshot: bool = True
    progress: bool = False
    as_of: TimestampExpr | None = None
    as_of_at_least: bool = False
    up_to: TimestampExpr | None = None
    upsert_key: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Begin:
    pass


@dataclass(frozen=True)
class Commit:
    pass


@dataclass(frozen=True)
class Rollback:
    pass


@dataclass(frozen=True)
class SetVar:
    name: str
    value: str | None  # None: DEFAULT
    local: bool = False


@dataclass(frozen=True)
class ResetVar:
    name: str


@dataclass(frozen=True)
class ShowVar:
    name: str


@dataclass(frozen=True)
class Declare:
    name: str
    subscribe: Subscribe | None  # None: a PostgreSQL cursor (DECLARE ... FOR SELECT)
    sql: str


@dataclass(frozen=True)
class Fetch:
    name: str
    count: int | None  # None: ALL
    timeout_ms: float | None  # None: wait for the first rows, then take what is ready


@dataclass(frozen=True)
class Close:
    name: str | None  # None: CLOSE ALL


@dataclass(frozen=True)
class CopySubscribe:
    subscribe: Subscribe
    binary: bool


@dataclass(frozen=True)
class MzNow:
    as_text: bool
    column: str


@dataclass(frozen=True)
class Admin:
    function: str
    args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PassThrough:
    sql: str


Statement = (
    Begin
    | Commit
    | Rollback
    | SetVar
    | ResetVar
    | ShowVar
    | Declare
    | Fetch
    | Close
    | Subscribe
    | CopySubscribe
    | MzNow
    | Admin
    | PassThrough
)

ADMIN_FUNCTIONS = frozenset(
    {
        "mzemu_drop_connections",
        "mzemu_pause_ticks",
        "mzemu_resume_ticks",
        "mzemu_compact",
        "mzemu_tick",
        "mzemu_frontier",
        "mzemu_since",
        "mzemu_synthetic_rate",
    }
)


class _Parser:
    def __init__(self, sql: str, tokens: list[Token]) -> None:
        self.sql = sql
        self.toks = tokens
        self.i = 0

    # -- primitives
    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "ident" and tok.text in words

    def at_op(self, op: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text == op

    def eat_word(self, *words: str) -> bool:
        if self.at_word(*words):
            self.i += 1
            return True
        return False

    def eat_op(self, op: str) -> bool:
        if self.at_op(op):
            self.i += 1
            return True
        return False

    def describe(self, tok: Token | None) -> str:
        if tok is None:
            return "EOF"
        if tok.kind == "ident":
            return f'identifier "{tok.text}"'
        if tok.kind == "qident":
            return f'identifier "{tok.text}"'
        if tok.kind == "number":
            return f'number "{tok.text}"'
        if tok.kind == "string":
            return f'string literal "{tok.text}"'
        return tok.text

    def position(self) -> int:
        tok = self.peek()
        return (tok.start if tok else len(self.sql)) + 1

    def expected(self, what: str) -> MzError:
        return syntax_error(f"Expected {what}, found {self.describe(self.peek())}", self.position())

    def expect_word(self, word: str) -> None:
        if not self.eat_word(word):
            raise self.expected(word.upper())

    def expect_op(self, op: str) -> None:
        if not self.eat_op(op):
            raise self.expected(op)

    def ident(self) -> str:
        tok = self.peek()
        if tok is None or tok.kind not in ("ident", "qident"):
            raise self.expected("identifier")
        self.i += 1
        return tok.text

    def object_name(self) -> str:
        parts = [self.ident()]
        while self.eat_op("."):
            parts.append(self.ident())
        if len(parts) > 3:
            raise syntax_error(f"qualified name has too many parts: {'.'.join(parts)}")
        return parts[-1]

    def done(self) -> bool:
        return self.peek() is None

    def expect_end(self) -> None:
        if not self.done():
            raise self.expected("end of statement")

    def rest(self) -> str:
        tok = self.peek()
        return "" if tok is None else self.sql[tok.start :]

    def paren_text(self) -> str:
        """Consume a balanced ``( ... )`` and return the inner text."""
        open_tok = self.peek()
        self.expect_op("(")
        depth = 1
        while True:
            tok = self.peek()
            if tok is None:
                raise self.expected(")")
            self.i += 1
            if tok.kind == "op" and tok.text == "(":
                depth += 1
            elif tok.kind == "op" and tok.text == ")":
                depth -= 1
                if depth == 0:
                    assert open_tok is not None
                    return self.sql[open_tok.end : tok.start].strip()

    # -- values
    def bool_value(self, option: str) -> bool:
        tok = self.peek()
        if tok is None:
            raise self.expected("a boolean")
        self.i += 1
        text = tok.text.lower() if tok.kind in ("ident", "string") else tok.text
        if text in ("true", "on", "t", "yes", "1"):
            return True
        if text in ("false", "off", "f", "no", "0"):
            return False
        raise MzError("22023", f"invalid {option.upper()}: cannot use value as boolean")

    def timestamp_expr(self) -> TimestampExpr:
        terms: list[tuple[int, str, str]] = []
        sign = 1
        while True:
            if self.eat_op("-"):
                sign = -sign
                continue
            if self.eat_op("+"):
                continue
            if self.eat_op("("):
                inner = self.timestamp_expr()
                self.expect_op(")")
                terms.extend((sign * s, k, v) for s, k, v in inner.terms)
            else:
                tok = self.peek()
                if tok is None:
                    raise self.expected("an expression")
                if tok.kind == "number" and re.fullmatch(r"\d+", tok.text):
                    terms.append((sign, "int", tok.text))
                    self.i += 1
                elif tok.kind == "string" and re.fullmatch(r"\s*\d+\s*", tok.text):
                    terms.append((sign, "int", tok.text.strip()))
                    self.i += 1
                elif tok.kind == "param":
                    terms.append((sign, "param", tok.text))
                    self.i += 1
                elif tok.kind == "ident" and tok.text == "mz_now":
                    self.i += 1
                    self.expect_op("(")
                    self.expect_op(")")
                    terms.append((sign, "now", ""))
                else:
                    raise MzError(
                        "0A000",
                        "the emulator evaluates AS OF / UP TO from integers, mz_now() and "
                        f"parameters only, found {self.describe(tok)}",
                    )
            while self.eat_op("::"):
                self.ident()
            sign = 1
            if self.at_op("+") or self.at_op("-"):
                continue
            return TimestampExpr(tuple(terms))

    # -- statements
    def subscribe(self) -> Subscribe:
        self.eat_word("to")
        relation, query = "", ""
        if self.at_op("("):
            query = self.paren_text()
            if not re.match(r"(?is)\s*(select|with|values|table)\b", query):
                raise syntax_error("Expected SELECT, VALUES, or a subquery in the query body")
        else:
            relation = self.object_name()
        upsert = self.output()
        snapshot, progress = True, False
        if self.eat_word("with"):
            self.expect_op("(")
            seen: set[str] = set()
            while True:
                if not self.at_word("snapshot", "progress"):
                    raise self.expected("one of PROGRESS or SNAPSHOT")
                name = self.ident()
                if name in seen:
                    raise MzError("42601", f"{name.upper()} specified more than once")
                seen.add(name)
                value = True
                if self.eat_op("=") or not (self.at_op(",") or self.at_op(")")):
                    value = self.bool_value(name)
                if name == "snapshot":
                    snapshot = value
                else:
                    progress = value
                if self.eat_op(")"):
                    break
                self.expect_op(",")
        as_of, at_least = None, False
        if self.at_word("as") and self.peek(1) is not None and self.peek(1).text == "of":  # type: ignore[union-attr]
            self.i += 2
            if self.eat_word("at"):
                self.expect_word("least")
                at_least = True
            as_of = self.timestamp_expr()
        up_to = None
        if self.at_word("up") and self.peek(1) is not None and self.peek(1).text == "to":  # type: ignore[union-attr]
            self.i += 2
            up_to = self.timestamp_expr()
        if upsert is None:
            # Materialize still accepts the output clause at the end, for backwards
            # compatibility with its older grammar.
            upsert = self.output()
        return Subscribe(relation, query, snapshot, progress, as_of, at_least, up_to, upsert)

    def output(self) -> tuple[str, ...] | None:
        if self.eat_word("within"):
            raise MzError("0A000", "WITHIN TIMESTAMP ORDER BY is not supported by the emulator")
        if not self.eat_word("envelope"):
            return None
        if self.eat_word("debezium"):
            raise MzError("0A000", "ENVELOPE DEBEZIUM is not supported by the emulator")
        if not self.eat_word("upsert"):
            raise self.expected("one of UPSERT or DEBEZIUM")
        self.expect_op("(")
        self.expect_word("key")
        self.expect_op("(")
        keys = [self.ident()]
        while self.eat_op(","):
            keys.append(self.ident())
        self.expect_op(")")
        self.expect_op(")")
        return tuple(keys)

    def fetch(self) -> Fetch:
        self.eat_word("forward")
        count: int | None = 1
        tok = self.peek()
        if self.eat_word("all"):
            count = None
        elif self.eat_word("next"):
            count = 1
        elif tok is not None and tok.kind == "number":
            if not tok.text.isdigit():
                raise self.expected("a non-negative integer")
            count = int(tok.text)
            self.i += 1
        self.eat_word("from", "in")
        name = self.ident()
        timeout: float | None = None
        if self.eat_word("with"):
            self.expect_op("(")
            if not self.eat_word("timeout"):
                raise self.expected("TIMEOUT")
            self.eat_op("=")
            value = self.peek()
            if value is None or value.kind not in ("string", "number"):
                raise self.expected("an interval")
            self.i += 1
            timeout = parse_interval_ms(value.text)
            self.expect_op(")")
        self.expect_end()
        return Fetch(name, count, timeout)

    def set_var(self, local: bool) -> SetVar:
        name = self.ident()
        while self.eat_op("."):
            name += "." + self.ident()
        if name == "transaction" or (name == "session" and self.at_word("characteristics")):
            return SetVar("transaction_isolation", self.rest(), local)
        if name == "time" and self.eat_word("zone"):
            name = "timezone"
        elif not (self.eat_op("=") or self.eat_word("to")):
            raise self.expected("equals sign or TO")
        if self.eat_word("default"):
            self.expect_end()
            return SetVar(name, None, local)
        values: list[str] = []
        while True:
            tok = self.peek()
            if tok is None:
                raise self.expected("variable value")
            self.i += 1
            text = tok.text
            if tok.kind == "op" and tok.text == "-":
                nxt = self.peek()
                if nxt is None or nxt.kind != "number":
                    raise self.expected("variable value")
                self.i += 1
                text = "-" + nxt.text
            values.append(text)
            if not self.eat_op(","):
                break
        self.expect_end()
        return SetVar(name, ", ".join(values), local)


_MZ_NOW = re.compile(
    r"(?is)\s*select\s+mz_now\s*\(\s*\)\s*(::\s*(text|string|mz_timestamp|numeric))?"
    r"\s*(?:as\s+(\"[^\"]+\"|\w+))?\s*;?\s*"
)
_ADMIN = re.compile(r"(?is)\s*select\s+(mzemu_\w+)\s*\((.*)\)\s*;?\s*")


def parse_statement(sql: str) -> Statement:
    """Parse one statement. Raises MzError on a malformed emulator statement."""
    tokens = tokenize(sql)
    if not tokens:
        return PassThrough(sql)
    head = tokens[0]
    handler = _HANDLERS.get(head.text) if head.kind == "ident" else None
    if handler is None:
        return PassThrough(sql)
    p = _Parser(sql, tokens)
    p.i = 1
    return handler(p)


def _parse_rollback(p: _Parser) -> Statement:
    if p.eat_word("to") or (p.at_word("work", "transaction") and p.peek(1) is not None):
        return PassThrough(p.sql)  # ROLLBACK TO SAVEPOINT
    return Rollback()


def _parse_set(p: _Parser) -> Statement:
    local = p.eat_word("local")
    if not local:
        p.eat_word("session")
    return p.set_var(local)


def _parse_show(p: _Parser) -> Statement:
    name = p.ident()
    if name == "time" and p.eat_word("zone"):
        name = "timezone"
    if name == "transaction" and p.eat_word("isolation"):
        p.expect_word("level")
        name = "transaction_isolation"
    return ShowVar(name) if p.done() else PassThrough(p.sql)


def _parse_subscribe(p: _Parser) -> Statement:
    sub = p.subscribe()
    p.expect_end()
    return sub


def _parse_declare(p: _Parser) -> Statement:
    name = p.ident()
    while p.eat_word("binary", "insensitive", "asensitive", "no", "scroll"):
        pass
    p.expect_word("cursor")
    if p.eat_word("without"):
        p.expect_word("hold")
    elif p.eat_word("with"):
        p.expect_word("hold")
        raise MzError("0A000", "WITH HOLD cursors are not supported")
    p.expect_word("for")
    inner_sql = p.rest()
    if p.eat_word("subscribe", "tail"):
        sub = p.subscribe()
        p.expect_end()
        return Declare(name, sub, inner_sql)
    return Declare(name, None, inner_sql)


def _parse_close(p: _Parser) -> Statement:
    if p.eat_word("all"):
        p.expect_end()
        return Close(None)
    name = p.ident()
    p.expect_end()
    return Close(name)


def _parse_copy(p: _Parser) -> Statement:
    if not p.at_op("("):
        return PassThrough(p.sql)
    inner = p.paren_text()
    inner_tokens = tokenize(inner)
    if not inner_tokens or inner_tokens[0].text not in ("subscribe", "tail"):
        return PassThrough(p.sql)
    q = _Parser(inner, inner_tokens)
    q.i = 1
    sub = q.subscribe()
    q.expect_end()
    p.expect_word("to")
    if not p.eat_word("stdout"):
        raise MzError("0A000", "COPY (SUBSCRIBE ...) only supports TO STDOUT")
    binary = False
    p.eat_word("with")
    if p.eat_op("("):
        while not p.eat_op(")"):
            option = p.ident()
            if option != "format":
                raise MzError("0A000", f"COPY option {option} is not supported")
            fmt = p.ident()
            if fmt not in ("text", "binary"):
                raise MzError("0A000", f"COPY TO STDOUT format {fmt} is not supported")
            binary = fmt == "binary"
            p.eat_op(",")
    elif p.eat_word("binary"):
        binary = True
    p.expect_end()
    return CopySubscribe(sub, binary)


def _parse_select(p: _Parser) -> Statement:
    m = _MZ_NOW.fullmatch(p.sql)
    if m:
        cast = (m.group(2) or "").lower()
        alias = (m.group(3) or "mz_now").strip('"')
        return MzNow(cast in ("text", "string"), alias)
    m = _ADMIN.fullmatch(p.sql)
    if m and m.group(1).lower() in ADMIN_FUNCTIONS:
        args = tuple(a.strip().strip("'") for a in m.group(2).split(",") if a.strip())
        return Admin(m.group(1).lower(), args)
    return PassThrough(p.sql)


_HANDLERS: dict[str, Callable[[_Parser], Statement]] = {
    "begin": lambda _p: Begin(),
    "start": lambda _p: Begin(),
    "commit": lambda _p: Commit(),
    "end": lambda _p: Commit(),
    "rollback": _parse_rollback,
    "abort": _parse_rollback,
    "set": _parse_set,
    "reset": lambda p: ResetVar(p.ident()),
    "show": _parse_show,
    "subscribe": _parse_subscribe,
    "tail": _parse_subscribe,
    "declare": _parse_declare,
    "fetch": lambda p: p.fetch(),
    "close": _parse_close,
    "copy": _parse_copy,
    "select": _parse_select,
}


_INTERVAL_UNITS = {
    "us": 0.001, "usec": 0.001, "microsecond": 0.001, "microseconds": 0.001,
    "ms": 1.0, "msec": 1.0, "millisecond": 1.0, "milliseconds": 1.0,
    "s": 1000.0, "sec": 1000.0, "secs": 1000.0, "second": 1000.0, "seconds": 1000.0,
    "m": 60_000.0, "min": 60_000.0, "mins": 60_000.0, "minute": 60_000.0,
    "minutes": 60_000.0,
    "h": 3_600_000.0, "hr": 3_600_000.0, "hour": 3_600_000.0, "hours": 3_600_000.0,
    "d": 86_400_000.0, "day": 86_400_000.0, "days": 86_400_000.0,
}  # fmt: skip


def parse_interval_ms(text: str) -> float:
    """Milliseconds of an interval literal such as ``1s``, ``250ms``, ``1 minute``, ``0``.

    A bare number is seconds, as in PostgreSQL's interval input. Raises MzError 22007.
    """
    s = text.strip().lower()
    if re.fullmatch(r"\d+:\d{2}(:\d{2}(\.\d+)?)?", s):
        parts = [float(x) for x in s.split(":")]
        while len(parts) < 3:
            parts.append(0.0)
        return (parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1000
    total = 0.0
    pos = 0
    matched = False
    for m in re.finditer(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]*)\s*", s):
        if m.start() != pos:
            break
        unit = m.group(2) or "s"
        if unit not in _INTERVAL_UNITS:
            break
        total += float(m.group(1)) * _INTERVAL_UNITS[unit]
        pos = m.end()
        matched = True
    if not matched or pos != len(s):
        raise MzError("22007", f'invalid input syntax for type interval: "{text}"')
    if total < 0:
        raise MzError("22023", "timeout must be non-negative")
    return total
