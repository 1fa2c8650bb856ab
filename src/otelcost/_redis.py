"""Redis clients for otelcost, built with short timeouts, bounded retries and health checks.

``connect`` accepts a client object (used as given: the caller chose its settings) or a URL:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path``:
  a ``redis.Redis``;
- ``redis+cluster://host:port`` (or ``rediss+cluster://``): a ``RedisCluster`` discovered
  from that node;
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]`` (or
  ``rediss+sentinel://``): the current master of ``master-name`` via Redis Sentinel; the
  credentials are the master's.

``budget_client`` is what the budget store and guard use inside the application: for a
plain ``redis://``, ``rediss://`` or ``unix://`` URL without options, otelcost's own client
(``otelcost._resp``), which leaves redis-py and its objects out of the process; for
anything else ``connect``.

The ``redis`` package is imported only here, so ``import otelcost`` works without it.
Credentials never appear in messages: use ``redact`` on any URL that is shown or logged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeAlias, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from otelcost._resp import RespClient
from otelcost.errors import MissingExtraError

if TYPE_CHECKING:
    from redis import Redis
    from redis.cluster import RedisCluster

__all__ = [
    "DEFAULT_OPTIONS",
    "BudgetClient",
    "RedisClient",
    "RedisLike",
    "RedisOption",
    "budget_client",
    "connect",
    "database",
    "redact",
]

RedisClient: TypeAlias = Union["Redis", "RedisCluster"]
"""A redis-py client: ``Redis`` (also what a Sentinel master is) or ``RedisCluster``."""

BudgetClient: TypeAlias = RedisClient | RespClient
"""What ``budget_client`` returns: otelcost's own client or a redis-py one."""

RedisLike: TypeAlias = str | RedisClient
"""A Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``redis+sentinel://``) or a redis-py client (``Redis``, a Sentinel master, ``RedisCluster``)."""

RedisOption: TypeAlias = float | int | bool | str | None
"""A redis-py connection option value (timeouts in seconds, ``health_check_interval``...)."""

DEFAULT_OPTIONS: dict[str, RedisOption] = {
    "socket_timeout": 1.0,
    "socket_connect_timeout": 1.0,
    "health_check_interval": 15,
    "retries": 2,  # on connection errors and timeouts, with exponential backoff and jitter
}

_SECRET = re.compile(r"(?<=://)([^/@]*)@")


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    return _SECRET.sub("***@", url)


def database(url: str) -> int:
    """The database number a ``redis://``/``rediss://``/``unix://`` URL selects (0 if none).

    Read from the path (``/3``) or the ``db`` query parameter (``?db=3``), as redis-py does.
    Raises ValueError naming the URL for anything that is not a non-negative integer.
    """
    parts = urlsplit(url)
    candidates = [] if parts.scheme.lower() == "unix" else [parts.path.strip("/")]
    candidates += [
        unquote(value)
        for name, _, value in (item.partition("=") for item in parts.query.split("&"))
        if name == "db"
    ]
    number = 0
    for text in candidates:
        if not text:
            continue
        if not text.isascii() or not text.isdigit():
            raise ValueError(
                f"bad database number {text!r} in {redact(url)!r}: expected a non-negative integer"
            )
        number = int(text)
    return number


def connect(target: RedisLike, **options: RedisOption) -> RedisClient:
    """A Redis client for ``target`` (a URL or a client object, returned unchanged).

    ``options`` override DEFAULT_OPTIONS and are passed to redis-py (``retries`` becomes a
    ``Retry`` with exponential backoff). Raises ValueError for an unsupported URL and
    ImportError when the ``redis`` package is missing (install ``otelcost[redis]``).
    """
    if not isinstance(target, str):
        if not callable(getattr(target, "register_script", None)):
            raise TypeError(
                f"expected a Redis URL or a redis-py client, got {type(target).__name__}"
            )
        return target
    settings: dict[str, object] = {**DEFAULT_OPTIONS, **options}
    retries = settings.pop("retries")
    if not isinstance(retries, int):
        raise TypeError(f"retries must be an int, got {retries!r}")
    try:
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry
    except ImportError:
        raise MissingExtraError("Redis support", "the redis package", "redis") from None
    settings["retry"] = Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries)
    scheme = urlsplit(target).scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        database(target)  # redis-py reads "/abc" as database 0: refuse it instead
        return redis.Redis.from_url(target, **settings)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from redis.cluster import RedisCluster

        settings.pop("health_check_interval")  # not a RedisCluster option
        plain = scheme.split("+", 1)[0] + target[len(scheme) :]
        return RedisCluster.from_url(plain, **settings)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel_master(target, tls=scheme.startswith("rediss"), settings=settings)
    raise ValueError(
        f"unsupported Redis URL {redact(target)!r}: expected redis://, rediss://, unix://, "
        "redis+cluster:// or redis+sentinel://"
    )


def budget_client(target: RedisLike, **options: RedisOption) -> BudgetClient:
    """``connect(target, **options)``, except that a ``redis://``, ``rediss://`` or
    ``unix://`` URL with no query but ``db`` and only DEFAULT_OPTIONS' options gets
    otelcost's own client (``otelcost._resp.RespClient``), which needs no redis-py in the
    process. Cluster and sentinel URLs, URL options (a CA file, client certificates...) and
    clients passed in keep redis-py. Raises as ``connect`` does for a bad URL.
    """
    if not isinstance(target, str) or not set(options) <= set(DEFAULT_OPTIONS):
        return connect(target, **options)
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    plain = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)} <= {"db"}
    if (
        scheme not in ("redis", "rediss", "unix")
        or not plain
        or (scheme == "unix" and not parts.path)
    ):
        return connect(target, **options)
    settings = {**DEFAULT_OPTIONS, **options}
    number = database(target)  # ValueError naming the URL for a bad one
    retries = settings["retries"]
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TypeError(f"retries must be an int >= 0, got {retries!r}")
    return RespClient(
        target,
        database=number,
        socket_timeout=_seconds("socket_timeout", settings["socket_timeout"]),
        socket_connect_timeout=_seconds(
            "socket_connect_timeout", settings["socket_connect_timeout"]
        ),
        health_check_interval=_seconds("health_check_interval", settings["health_check_interval"]),
        retries=retries,
        shown=redact(target),
    )


def _seconds(name: str, value: RedisOption) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise TypeError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _sentinel_master(url: str, *, tls: bool, settings: dict[str, object]) -> RedisClient:
    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    path = [p for p in parts.path.split("/") if p]
    if not netloc or not path or len(path) > 2:
        raise ValueError(
            f"bad sentinel URL {redact(url)!r}: expected "
            "redis+sentinel://[user:password@]host:port[,host:port]/master-name[/db]"
        )
    sentinels = []
    for node in netloc.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad sentinel address {node!r} in {redact(url)!r}")
        sentinels.append((host.strip("[]"), int(port)))
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"bad database number in {redact(url)!r}")
    master_options = dict(settings)
    if parts.username:
        master_options["username"] = unquote(parts.username)
    if parts.password:
        master_options["password"] = unquote(parts.password)
    if len(path) == 2:
        master_options["db"] = int(path[1])
    if tls:
        master_options["ssl"] = True
    sentinel_options = {
        "socket_timeout": settings["socket_timeout"],
        "socket_connect_timeout": settings["socket_connect_timeout"],
    }
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    master: Redis = sentinel.master_for(unquote(path[0]), **master_options)  # type: ignore[no-untyped-call]
    return master
