"""Re-initialising objects in a forked child: locks and threads do not survive ``fork()``."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_forked_child"]

T = TypeVar("T")


def in_forked_child(owner: T, reinit: Callable[[T], None]) -> None:
    """Call ``reinit(owner)`` in every child forked from now on, while ``owner`` is alive.

    The hook holds ``owner`` weakly (it must not keep it alive) and runs before the child
    returns from ``fork()``, so the child never uses a lock a parent's thread held, nor a
    worker thread that does not exist there. Hooks run in the order they were registered.
    """
    if not hasattr(os, "register_at_fork"):  # Windows: no fork
        return
    ref = weakref.ref(owner)

    def hook() -> None:
        alive = ref()
        if alive is not None:
            reinit(alive)

    os.register_at_fork(after_in_child=hook)
