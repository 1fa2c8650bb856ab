"""A Redis client of otelcost's own, for the budget store inside the application.

redis-py brings about 11,000 objects the garbage collector tracks into the application
(its asyncio client, its observability modules, the command mixins): every full collection
walks them, a pause of every thread. In the end-to-end bench that was 1.4 points of the
capacity lost with every exporter, and full collections of 28 ms against 19
(docs/design-decisions.md §1). The budget store sends a handful of commands: EVALSHA (the
script loaded once with SCRIPT LOAD), GET, PTTL, HGETALL, TIME and SCAN. This client
speaks them in RESP2 over one connection per client, for plain ``redis://``, ``rediss://``
and ``unix://`` URLs; ``_redis.budget_client`` decides, and everything else (cluster,
sentinel, URL options such as a CA file, clients passed in) stays with redis-py.

What it keeps of redis-py's behaviour: connect and socket timeouts; for ``rediss://``, TLS
as redis-py sets it up by default (``ssl.create_default_context()``: the system's CA
certificates, or ``SSL_CERT_FILE``; the certificate and the host name verified); AUTH (with a user:
ACL) and SELECT on each new connection; a PING first when the connection sat idle past
``health_check_interval``; ``retries`` retries on connection errors and timeouts, with
exponential backoff and jitter, on a new connection (a retried script may then run twice:
the store's fences make that harmless); a new connection and lock in a forked child; thread safety
(a lock around each round trip: the budget threads share one client). Error replies raise
``RedisReplyError`` with the server's message; connection failures raise the built-in
``ConnectionError`` and ``TimeoutError`` (both ``OSError``). Credentials never appear in
its repr or its messages.
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from otelcost._fork import in_forked_child
from otelcost.errors import RedisReplyError

__all__ = ["RespClient", "RespPipeline", "RespScript"]

_BACKOFF_BASE = 0.05  # seconds, doubled per retry, capped, with jitter (as redis-py's)
_BACKOFF_CAP = 0.5
_CRLF = b"\r\n"


class _Error:
    """An error reply, kept in its place among a pipeline's replies until it is raised."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _encode(command: Sequence[object]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            raise TypeError(f"Redis arguments are bytes, str or int, got {type(arg).__name__}")
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    """RESP2 replies read from a socket: bulk strings as bytes, nil as None, integers as
    int, arrays as lists, status replies as str, error replies as _Error."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self._buffer = self._buffer[self._at :] + chunk
        self._at = 0

    def _line(self) -> bytes:
        while (end := self._buffer.find(_CRLF, self._at)) < 0:
            self._fill()
        line = self._buffer[self._at : end]
        self._at = end + 2
        return line

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self._buffer) - self._at < size + 2:
                self._fill()
            data = self._buffer[self._at : self._at + size]
            self._at += size + 2
            return data
        if kind == b":":
            return int(rest)
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.reply() for _ in range(size)]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return _Error(rest.decode("utf-8", "replace"))
        # Not RESP2: the stream cannot be trusted any further.
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


def _raised(reply: Any) -> Any:
    if isinstance(reply, _Error):
        raise RedisReplyError(reply.message)
    return reply


class RespClient:
    """One connection to the Redis server of a ``redis://`` or ``unix://`` URL (see the
    module's docstring). ``url`` has been checked by ``_redis.budget_client``."""

    def __init__(
        self,
        url: str,
        *,
        database: int,
        socket_timeout: float,
        socket_connect_timeout: float,
        health_check_interval: float,
        retries: int,
        shown: str,
    ) -> None:
        parts = urlsplit(url)
        # A unix socket's path, or None and the TCP address, in TLS for rediss://.
        scheme = parts.scheme.lower()
        self._path = parts.path if scheme == "unix" else None
        self._address = (parts.hostname or "localhost", parts.port or 6379)
        self._tls = scheme == "rediss"
        self._context: ssl.SSLContext | None = None
        handshake: list[tuple[object, ...]] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            password = unquote(parts.password)
            handshake.append(("AUTH", user, password) if user else ("AUTH", password))
        if database:
            handshake.append(("SELECT", database))
        self._handshake = tuple(_encode(command) for command in handshake)
        self._timeout = socket_timeout
        self._connect_timeout = socket_connect_timeout
        self._health_check_interval = health_check_interval
        self._retries = retries
        self._shown = shown
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: _Reader | None = None
        self._used = 0.0
        in_forked_child(self, _after_fork)

    def __repr__(self) -> str:
        return f"RespClient({self._shown!r})"

    # -- the commands the budget store sends ----------------------------------------------

    def execute_command(self, *command: object) -> Any:
        """One command's reply; RedisReplyError for an error reply."""
        return _raised(self._round_trip([command])[0])

    def ping(self) -> bool:
        return bool(self.execute_command("PING") == "PONG")

    def time(self) -> tuple[int, int]:
        seconds, micros = self.execute_command("TIME")
        return int(seconds), int(micros)

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[bytes]:
        """Every key matching ``match`` (SCAN: keys may repeat, as with redis-py)."""
        options: list[object] = []
        if match is not None:
            options += ["MATCH", match]
        if count is not None:
            options += ["COUNT", count]
        cursor: bytes = b"0"
        while True:
            cursor, keys = self.execute_command("SCAN", cursor, *options)
            yield from keys
            if cursor == b"0":
                return

    def pipeline(self, transaction: bool = False) -> RespPipeline:
        """Commands sent together in one round trip (never a MULTI transaction)."""
        if transaction:
            raise ValueError("RespClient pipelines are not transactions")
        return RespPipeline(self)

    def register_script(self, script: str) -> RespScript:
        return RespScript(self, script)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- the connection -------------------------------------------------------------------

    def _round_trip(self, commands: Sequence[Sequence[object]]) -> list[Any]:
        """The replies to ``commands``, sent together; retried on a new connection after a
        connection error or timeout, ``retries`` times."""
        payload = b"".join(_encode(command) for command in commands)
        attempt = 0
        with self._lock:
            while True:
                try:
                    sock, reader = self._ready()
                    sock.sendall(payload)
                    replies = [reader.reply() for _ in commands]
                    self._used = time.monotonic()
                    return replies
                except OSError:
                    self._drop()
                    if attempt >= self._retries:
                        raise
                    delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)
                    time.sleep(random.uniform(0, delay))
                    attempt += 1

    def _ready(self) -> tuple[socket.socket, _Reader]:
        """A live connection: a new one if there is none, else the current one, checked
        with a PING if it sat idle."""
        sock, reader = self._sock, self._reader
        if sock is None or reader is None:
            return self._connect()
        if time.monotonic() - self._used > self._health_check_interval:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            _raised(reader.reply())
        return sock, reader

    def _connect(self) -> tuple[socket.socket, _Reader]:
        if self._path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._connect_timeout)
                sock.connect(self._path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = self._wrapped(sock)
        sock.settimeout(self._timeout)
        reader = _Reader(sock)
        try:
            if self._handshake:
                sock.sendall(b"".join(self._handshake))
                for _ in self._handshake:
                    _raised(reader.reply())
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, reader
        self._used = time.monotonic()
        return sock, reader

    def _wrapped(self, sock: socket.socket) -> socket.socket:
        """``sock`` in TLS (the handshake within the connect timeout), closed on failure."""
        try:
            if self._context is None:  # once per client: it reads the CA certificates
                self._context = ssl.create_default_context()
            return self._context.wrap_socket(sock, server_hostname=self._address[0])
        except BaseException:
            sock.close()
            raise

    def _drop(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            sock.close()


def _after_fork(client: RespClient) -> None:
    """In a forked child: a lock no parent's thread can hold, and no parent's connection.
    Closing the child's copy of the socket leaves the parent's connection open (the parent
    still holds it); it is never written to or shut down here."""
    client._lock = threading.Lock()
    client._drop()


class RespPipeline:
    """GET, PTTL and HGETALL queued, then sent in one round trip by ``execute``."""

    def __init__(self, client: RespClient) -> None:
        self._client = client
        self._commands: list[tuple[object, ...]] = []
        self._as_hash: list[bool] = []

    def get(self, name: str) -> RespPipeline:
        return self._queue(("GET", name), as_hash=False)

    def pttl(self, name: str) -> RespPipeline:
        return self._queue(("PTTL", name), as_hash=False)

    def hgetall(self, name: str) -> RespPipeline:
        return self._queue(("HGETALL", name), as_hash=True)

    def _queue(self, command: tuple[object, ...], *, as_hash: bool) -> RespPipeline:
        self._commands.append(command)
        self._as_hash.append(as_hash)
        return self

    def execute(self) -> list[Any]:
        """The replies in order (HGETALL's as a dict of bytes); RedisReplyError for the
        first error reply."""
        commands, as_hash = self._commands, self._as_hash
        self._commands, self._as_hash = [], []
        if not commands:
            return []
        replies = [_raised(reply) for reply in self._client._round_trip(commands)]
        return [
            dict(zip(reply[::2], reply[1::2], strict=True)) if hashed else reply
            for reply, hashed in zip(replies, as_hash, strict=True)
        ]


class RespScript:
    """A Lua script run by its SHA1 (EVALSHA), loaded once when the server lacks it."""

    def __init__(self, client: RespClient, script: str) -> None:
        self._client = client
        self._script = script
        self.sha = hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()

    def __call__(self, keys: Sequence[str] = (), args: Sequence[str | int] = ()) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        reply = self._client._round_trip([command])[0]
        if isinstance(reply, _Error) and reply.message.startswith("NOSCRIPT"):
            # A restarted or flushed server: load it (SCRIPT LOAD) and run it by SHA again.
            loaded, reply = self._client._round_trip([("SCRIPT", "LOAD", self._script), command])
            _raised(loaded)
        return _raised(reply)
