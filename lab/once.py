"""Objects a process loads once, on first use, and unloads explicitly: the fates recorder
(lab/fates.py) and the sysctl watch (lab/inventory.py), each a BPF object attached for the
whole process. Never left to atexit: a session or command calls close()."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=Closable)


class OnePerProcess(Generic[T]):
    """`get()` loads the object with `make` on first use, or raises the same error (of type
    `error`) every time it could not be loaded; `close()` unloads it (a later get() loads it
    again)."""

    def __init__(self, make: Callable[[], T], error: type[Exception]) -> None:
        self._make, self._error = make, error
        self._obj: T | None = None
        self._failed: Exception | None = None

    def get(self) -> T:
        if self._obj is None:
            if self._failed is not None:
                raise self._failed
            try:
                self._obj = self._make()
            except self._error as e:
                self._failed = e
                raise
        return self._obj

    def close(self) -> None:
        if self._obj is not None:
            obj, self._obj = self._obj, None
            obj.close()
