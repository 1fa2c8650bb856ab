"""Other processes for tests: code run alone in a fresh interpreter (what a user's script
sees), and code run in a forked child (what a pre-fork server's worker sees)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path


def run_python(
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``code`` (dedented) run by this interpreter, its output captured as text; ``env``
    replaces the whole environment. The caller checks the exit status."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


def in_forked_child(report: Callable[[], str]) -> str:
    """What ``report()`` returns when run in a child forked from this process. The child
    leaves with ``os._exit``, so none of the parent's teardown runs twice; an exception in
    the child fails the test with the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_end)
            text = report()
        except BaseException:
            status, text = 1, traceback.format_exc()
        finally:
            try:
                os.write(write_end, text.encode())
            finally:
                os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"in the forked child:\n{text}"
    return text
