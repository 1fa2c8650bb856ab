"""URL path normalization: replace volatile path segments with ``*`` to bound cardinality.

``normalize_path("/api/v2/users/123/orders/456") == "/api/v2/users/*/orders/*"``

Rules, in order:

1. Lone surrogates become U+FFFD; C0/C1 control characters and Unicode bidi
   embedding/override/isolate characters are removed (they are never part of a real path
   and would let a caller smuggle invisible text into operation names).
2. A leading ``scheme://authority`` is dropped, then everything from the first ``?`` or
   ``#`` on (query string and fragment).
3. A path longer than ``MAX_PATH_CHARS`` is cut at its last ``/`` before that length and
   gets one final ``*`` segment instead of the rest.
4. User rules (``PathNormalizer(rules=...)``) run on what is left, in order; step 1 is
   applied again to their output.
5. The path is split on ``/``; empty segments are dropped, so ``//`` collapses, a trailing
   slash is removed and the empty path becomes ``/``. The result always starts with ``/``.
6. Each segment is percent-decoded for classification, then:
   a. a segment that is an e-mail address becomes ``*``;
   b. a run of at least 20 base64 or base64url characters (``A-Za-z0-9+=_-``) becomes ``*`` when one
      of its alphanumeric chunks mixes upper case, lower case and digits (random base64),
      or when it has no separator (``-_+=``) and at least 3 digits (base32/36 ids);
   c. tokens bounded by non-alphanumeric characters become ``*`` when they are a UUID (any
      case), an ISO 8601 date or date-time, a ULID, a hex id (at least 8 hex characters
      including a digit) or a number (``42``, ``12.50``, ``4.17.21``).
   So ``550e8400-e29b-41d4-a716-446655440000.json`` -> ``*.json``,
   ``order-<uuid>`` -> ``order-*``, ``invoice_2026-11-27.pdf`` -> ``invoice_*.pdf``.
   Kept: words, digits inside words (``sha256``, ``v2beta1``, ``ipv4``, ``user123``),
   ``v``-versions (``v2``, ``v10``, ``v1.2``), non-ASCII text. Every volatile class except
   e-mail needs an ASCII digit, so a segment without digits, ``@`` or ``%`` is kept as is.
7. A decoded segment is written back percent-encoded only where needed for the result to
   read back identically: ``%`` before two hex digits, ``/``, ``?``, ``#`` and the
   characters removed in step 1. Everything else stays decoded, so ``%7E`` and ``~`` (or
   ``Jos%C3%A9`` and ``José``) give the same result, and invalid UTF-8 escapes become
   U+FFFD.

Properties (checked by tests): never raises on a ``str``; the result is never longer than
the input plus one character (without user rules); idempotent (with user rules, as long as
the rules themselves are); linear time, since every pattern runs inside one segment and is
anchored by lookarounds that rule out catastrophic backtracking. User rules are arbitrary
regular expressions: their cost and idempotency are the caller's responsibility.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias
from urllib.parse import quote

__all__ = ["MAX_PATH_CHARS", "PathNormalizer", "Rule", "normalize_path", "normalize_segment"]

MAX_PATH_CHARS = 16384
"""Longer paths (beyond what HTTP servers accept) are cut at the last ``/`` before this many
characters and end in one ``*`` segment, which bounds the work per call."""

Rule: TypeAlias = tuple[str | re.Pattern[str], str]
"""A user rule: a regular expression (source or compiled) and a ``re.sub`` replacement."""

# Characters removed from input (step 1) and re-escaped on output (step 7).
_INVISIBLE = "\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
_STRIP_INVISIBLE = re.compile(f"[{_INVISIBLE}]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_REESCAPE = re.compile(f"%(?=[0-9A-Fa-f]{{2}})|[/?#{_INVISIBLE}]")
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}://[^/?#]*")

# Runs of percent escapes, decoded together so multi-byte UTF-8 sequences come out whole.
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")

# A segment needs classification only if it holds a digit, '@' or a percent escape.
_NEEDS_WORK = re.compile(r"[0-9@%]")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}")

# Maximal base64url runs: the lookbehind pins the start to the beginning of a run and the
# greedy quantifier takes all of it, so each run is scanned once.
_RUN = re.compile(r"(?<![A-Za-z0-9+=_-])[A-Za-z0-9+=_-]{20,}")
_CHUNK = re.compile(r"[A-Za-z0-9]+")
_LONG_ALNUM = re.compile(r"[A-Za-z0-9]{20}")

_HEX = "[0-9a-fA-F]"
_UUID_SOURCE = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_UUID = re.compile(_UUID_SOURCE)  # callers ensure a digit (see _NEEDS_WORK)
# Tokens start and end at a boundary between a Unicode letter/digit ([^\W_]) and anything
# else. Alternatives are ordered longest-form first; the "keep" alternative claims
# v-versions so that "v1.2.3" is not read as "v1." + number.
_TOKEN = re.compile(
    r"(?<![^\W_])(?:"
    r"(?P<keep>[vV][0-9]+(?:\.[0-9]+)*)"
    rf"|(?=[-a-fA-F]{{0,35}}[0-9]){_UUID_SOURCE}"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt _][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
    r"|[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}"
    rf"|(?=[a-fA-F]*[0-9]){_HEX}{{8,}}"
    r"|[0-9]+(?:[.,][0-9]+)*"
    r")(?![^\W_])"
)


def _is_opaque(run: str) -> bool:
    # Random base64 has upper, lower and digits in one alphanumeric chunk; lower-case
    # base32/36 ids have no separators and several digits. Slugs such as
    # "Order-550E8400-E29B-..." or "Top-10-Tips" match neither and are left to _TOKEN.
    chunks = _CHUNK.findall(run)
    for chunk in chunks:
        if (
            not chunk.isdigit()
            and not chunk.isalpha()
            and not chunk.isupper()
            and not chunk.islower()
        ):
            return True
    if len(chunks) == 1 and chunks[0] == run and not run.isdigit():
        return sum(c.isdigit() for c in run) >= 3
    return False


def _replace_run(match: re.Match[str]) -> str:
    run = match.group()
    return "*" if _is_opaque(run) else run


def _replace_token(match: re.Match[str]) -> str:
    return match.group() if match.group("keep") is not None else "*"


def _decode(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", "replace")


def _escape(match: re.Match[str]) -> str:
    return quote(match.group(), safe="")


def _normalize_segment(segment: str) -> str:
    """Normalize one non-empty, sanitized segment; a raw ``/`` in it is just a boundary."""
    if _NEEDS_WORK.search(segment) is None:
        return segment
    if segment.isascii() and segment.isdigit():
        return "*"
    if len(segment) == 36 and _UUID.fullmatch(segment):  # shortcut for the common whole-UUID
        return "*"
    encoded = "%" in segment
    text = _ESCAPES.sub(_decode, segment) if encoded else segment
    if "@" in text and _EMAIL.fullmatch(text):
        return "*"
    if len(text) >= 20 and (
        # Cheap pre-checks for the two opaque shapes: mixed case, or a long alphanumeric run.
        not (text.islower() or text.isupper()) or _LONG_ALNUM.search(text)
    ):
        text = _RUN.sub(_replace_run, text)
    text = _TOKEN.sub(_replace_token, text)
    return _REESCAPE.sub(_escape, text) if encoded else text


# Segments repeat across paths ("api", "v2", "users"): memoise them for all normalizers.
# Only short ones are cached, which bounds the memo to about _SEGMENT_CACHE_SIZE * 200 bytes.
_SEGMENT_CACHE_SIZE = 8192
_MAX_CACHED_SEGMENT = 64
_cached_segment = functools.lru_cache(maxsize=_SEGMENT_CACHE_SIZE)(_normalize_segment)


def _sanitize(text: str) -> str:
    if text.isprintable():  # fast C scan: no control, format or surrogate characters
        return text
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    if _STRIP_INVISIBLE.search(text):
        text = _STRIP_INVISIBLE.sub("", text)
    return text


def _path_part(path: str) -> str:
    """``path`` without any ``scheme://authority``, query and fragment."""
    if "://" in path:
        authority = _AUTHORITY.match(path)
        if authority is not None:
            path = path[authority.end() :]
    cut = path.find("?")
    if cut >= 0:
        path = path[:cut]
    cut = path.find("#")
    if cut >= 0:
        path = path[:cut]
    return path


def _compile_rules(
    rules: Mapping[str | re.Pattern[str], str] | Iterable[Rule],
) -> tuple[tuple[re.Pattern[str], str], ...]:
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    compiled = []
    for pattern, replacement in pairs:
        regex = re.compile(pattern)
        _check_template(regex, replacement)
        compiled.append((regex, replacement))
    return tuple(compiled)


def _check_template(regex: re.Pattern[str], replacement: str) -> None:
    """Raise ``re.error`` now for a replacement ``re.sub`` would reject at the first match.

    Expands the template against a match of a stand-in pattern with the same groups, so bad
    group references and bad escapes surface at construction instead of per span.
    """
    names = {index: name for name, index in regex.groupindex.items()}
    groups = "".join(
        f"(?P<{names[i]}>)" if i in names else "()" for i in range(1, regex.groups + 1)
    )
    try:
        re.compile(groups).sub(replacement, "")
    except IndexError as exc:  # how some Python versions report an unknown group name
        raise re.error(f"{exc} in replacement {replacement!r}") from None


class PathNormalizer:
    """A callable ``str -> str`` applying the module's rules, with optional user rules first.

    ``rules``: a mapping or an iterable of ``(regex, replacement)`` pairs, compiled once here
    (a bad regex or replacement raises ``re.error`` now, never later). They run in order on
    the path after the query string, fragment and ``scheme://authority`` were dropped, e.g.
    ``{r"^/static/.*": "/static"}`` or ``[(r"/tenants/[^/]+", "/tenants/{tenant}")]``.

    ``cache_size``: how many results to memoise (LRU, thread-safe; 0 disables).
    ``max_cached_length``: longer inputs are computed every time and never cached, so the
    memo holds at most ``cache_size`` entries of bounded size.
    """

    __slots__ = ("_call", "_memo", "_rules", "max_cached_length")

    def __init__(
        self,
        rules: Mapping[str | re.Pattern[str], str] | Iterable[Rule] = (),
        *,
        cache_size: int = 4096,
        max_cached_length: int = 256,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._rules = _compile_rules(rules)
        self.max_cached_length = max_cached_length
        self._memo: functools._lru_cache_wrapper[str] | None = (
            functools.lru_cache(maxsize=cache_size)(self._normalize) if cache_size else None
        )
        self._call: Callable[[str], str] = self._memo or self._normalize

    def __call__(self, path: str) -> str:
        """Return the normalized form of ``path`` (see the module docstring)."""
        if len(path) <= self.max_cached_length:
            return self._call(path)
        return self._normalize(path)

    def _normalize(self, path: str) -> str:
        path = _path_part(_sanitize(path))
        truncated = len(path) > MAX_PATH_CHARS
        if truncated:
            # Cut at a segment boundary and leave room for "/" + "/*", so the result is
            # short enough not to be cut again (idempotency).
            path = path[: max(path.rfind("/", 0, MAX_PATH_CHARS - 2), 0)]
        if self._rules:
            for regex, replacement in self._rules:
                path = regex.sub(replacement, path)
            path = _sanitize(path)
        # Integer ids are the most common volatile segment: decide them before the memo,
        # where each distinct id would only evict a segment worth keeping.
        segments = [
            "*"
            if s.isdigit() and s.isascii()
            else _cached_segment(s)
            if len(s) <= _MAX_CACHED_SEGMENT
            else _normalize_segment(s)
            for s in path.split("/")
            if s
        ]
        if truncated:
            segments.append("*")
        return "/" + "/".join(segments)

    def cache_info(self) -> dict[str, int]:
        """Memo statistics: ``hits``, ``misses``, ``size`` and ``max_size`` (0 when disabled)."""
        if self._memo is None:
            return {"hits": 0, "misses": 0, "size": 0, "max_size": 0}
        info = self._memo.cache_info()
        return {
            "hits": info.hits,
            "misses": info.misses,
            "size": info.currsize,
            "max_size": info.maxsize or 0,
        }

    def __repr__(self) -> str:
        return f"PathNormalizer(rules={[(r.pattern, t) for r, t in self._rules]!r})"


_DEFAULT = PathNormalizer()


def normalize_path(path: str) -> str:
    """Replace volatile segments of a URL path with ``*`` (memoised; see the module doc).

    >>> normalize_path("/api/v2/users/123/orders/456?expand=items")
    '/api/v2/users/*/orders/*'
    """
    return _DEFAULT(path)


def normalize_segment(text: str) -> str:
    """Apply the per-segment rules (steps 1, 6 and 7) to one segment or word, keeping any ``/``.

    For text that is not a path, such as the words of a span name: ``"4242"`` -> ``"*"``,
    ``"user:123"`` -> ``"user:*"``, ``"HTTP/1.1"`` -> ``"HTTP/*"``; the empty string stays.
    A text longer than ``MAX_PATH_CHARS`` becomes ``*``, like an overlong path's tail.
    """
    text = _sanitize(text)
    if not text:
        return text
    if len(text) <= _MAX_CACHED_SEGMENT:
        return _cached_segment(text)
    return _normalize_segment(text) if len(text) <= MAX_PATH_CHARS else "*"
