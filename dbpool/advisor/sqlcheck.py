"""Which statements ``dbpool bench`` runs without ``--allow-writes``, and its placeholders.

The check reads the statement the way the server will: comments, quoted strings
and identifiers are skipped as whole tokens, so a keyword inside a string or a
comment changes nothing, and a ``;`` outside them ends a statement. A statement
passes when its first keyword (after any opening parentheses) is ``SELECT``,
``SHOW``, ``DESCRIBE``/``DESC``, ``EXPLAIN`` (when it does not execute a write:
``EXPLAIN ANALYZE`` runs the statement it explains) or ``WITH`` whose main
statement is a ``SELECT``. Refused as well: several statements, MySQL's
executable comments (``/*! ... */``, which the server runs), ``SELECT ... INTO
OUTFILE/DUMPFILE`` (writes a file) and locking reads (``FOR UPDATE``, ``LOCK IN
SHARE MODE``, ``FOR SHARE``), which block writers. It is a check of the
statement's kind, not a sandbox: a function called by a ``SELECT`` may still
write. A read-only database user is the real guarantee.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

READ_ONLY_KEYWORDS = ("SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "DESC", "WITH")


class UnsafeStatement(ValueError):
    """A statement that may change data, refused without ``--allow-writes``."""


class BadStatement(ValueError):
    """A statement that cannot be read: unterminated string or comment, bad placeholder."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "punct", "string", "number"
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_QUOTES = "'\"`"


def _tokens(sql: str) -> list[_Token]:
    """Split ``sql`` into words, punctuation and quoted strings; comments are dropped."""
    tokens: list[_Token] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif sql.startswith("/*", i):
            if sql.startswith(("/*!", "/*M!"), i):
                raise UnsafeStatement(
                    "executable comments (/*! ... */) run as SQL on the server and cannot "
                    "be checked"
                )
            end = sql.find("*/", i + 2)
            if end < 0:
                raise BadStatement("a /* comment is not closed")
            i = end + 2
        elif ch == "#" or (sql.startswith("--", i) and (i + 2 == n or sql[i + 2].isspace())):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch in _QUOTES:
            i = _skip_quoted(sql, i)
            tokens.append(_Token("string", sql[i - 1]))
        elif match := _WORD.match(sql, i):
            tokens.append(_Token("word", match.group()))
            i = match.end()
        elif match := _NUMBER.match(sql, i):
            tokens.append(_Token("number", match.group()))
            i = match.end()
        else:
            tokens.append(_Token("punct", ch))
            i += 1
    return tokens


def _skip_quoted(sql: str, start: int) -> int:
    """The index after the quoted string or identifier starting at ``start``."""
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        ch = sql[i]
        if ch == "\\" and quote != "`":
            i += 2
        elif ch == quote:
            if sql.startswith(quote * 2, i):  # a doubled quote stands for itself
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise BadStatement(f"a {quote}-quoted string is not closed")


def _statements(tokens: list[_Token]) -> list[list[_Token]]:
    parts: list[list[_Token]] = [[]]
    for token in tokens:
        if token.kind == "punct" and token.text == ";":
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def check_read_only(sql: str) -> None:
    """Raise UnsafeStatement unless ``sql`` is one statement that only reads."""
    statements = _statements(_tokens(sql))
    if not statements:
        raise BadStatement("the statement is empty")
    if len(statements) > 1:
        raise UnsafeStatement(
            f"it holds {len(statements)} statements separated by ';'; give one per --sql"
        )
    _check_tokens(statements[0])


def _check_tokens(tokens: list[_Token]) -> None:
    i = 0
    while i < len(tokens) and tokens[i].text == "(":
        i += 1
    if i == len(tokens) or tokens[i].kind != "word":
        raise UnsafeStatement("it does not start with a keyword")
    keyword = tokens[i].text.upper()
    if keyword == "SELECT":
        _check_select(tokens[i:])
    elif keyword == "WITH":
        _check_tokens(_after_with(tokens, i + 1))
    elif keyword in ("EXPLAIN", "DESCRIBE", "DESC"):
        _check_explain(tokens[i + 1 :])
    elif keyword != "SHOW":
        raise UnsafeStatement(
            f"a {keyword} statement may change data or server state; without --allow-writes "
            f"only {', '.join(READ_ONLY_KEYWORDS[:-1])} and WITH ... SELECT run"
        )


def _check_select(tokens: list[_Token]) -> None:
    for here, after in itertools.pairwise(tokens):
        if here.is_word("INTO") and after.is_word("OUTFILE", "DUMPFILE"):
            raise UnsafeStatement(f"SELECT ... INTO {after.text.upper()} writes a file")
        if (here.is_word("FOR") and after.is_word("UPDATE", "SHARE")) or (
            here.is_word("LOCK") and after.is_word("IN")
        ):
            raise UnsafeStatement(
                "it is a locking read (FOR UPDATE, FOR SHARE or "
                "LOCK IN SHARE MODE), which blocks writers"
            )


def _after_with(tokens: list[_Token], i: int) -> list[_Token]:
    """The main statement after ``WITH [RECURSIVE] name [(cols)] AS (...), ...``."""
    if i < len(tokens) and tokens[i].is_word("RECURSIVE"):
        i += 1
    while True:
        i += 1  # the name of the common table expression
        if i < len(tokens) and tokens[i].text == "(":
            i = _after_parentheses(tokens, i)
        if not (i < len(tokens) and tokens[i].is_word("AS")):
            raise UnsafeStatement("its WITH clause cannot be read (expected name AS (...))")
        i += 1
        if not (i < len(tokens) and tokens[i].text == "("):
            raise UnsafeStatement("its WITH clause cannot be read (expected AS (...))")
        end = _after_parentheses(tokens, i)
        _check_tokens(tokens[i + 1 : end - 1])  # a common table expression only reads too
        i = end
        if i < len(tokens) and tokens[i].text == ",":
            i += 1
            continue
        return tokens[i:]


def _after_parentheses(tokens: list[_Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].text == "(" and tokens[j].kind == "punct":
            depth += 1
        elif tokens[j].text == ")" and tokens[j].kind == "punct":
            depth -= 1
            if depth == 0:
                return j + 1
    raise BadStatement("a parenthesis is not closed")


_EXPLAIN_OPTIONS = ("EXTENDED", "PARTITIONS", "FORMAT", "=", "JSON", "TRADITIONAL", "TREE")


def _check_explain(tokens: list[_Token]) -> None:
    # EXPLAIN [options] ANALYZE [options] stmt runs stmt; plain EXPLAIN of a write only plans it.
    i = _after_options(tokens, 0)
    if i < len(tokens) and tokens[i].is_word("ANALYZE"):
        _check_tokens(tokens[_after_options(tokens, i + 1) :])


def _after_options(tokens: list[_Token], i: int) -> int:
    while i < len(tokens) and tokens[i].text.upper() in _EXPLAIN_OPTIONS:
        i += 1
    return i


def placeholders(sql: str) -> tuple[int, str | None]:
    """The ``%s`` placeholders of ``sql``, and what else follows a ``%`` (None: nothing).

    With parameters, the drivers format the whole text, strings and comments
    included, in their ``format`` style: ``%s`` takes a parameter, ``%%`` stands
    for ``%``, anything else after a ``%`` fails. This reads the text the same way.
    """
    count = 0
    problem = None
    i = 0
    while True:
        i = sql.find("%", i)
        if i < 0:
            return count, problem
        code = sql[i + 1 : i + 2]
        if code == "s":
            count += 1
        elif code != "%" and problem is None:
            problem = f"%{code}"
        i += 2
