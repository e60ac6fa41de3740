"""Bounded polling for tests against the local control plane, and following a watch.

A wait is a bound, never a performance assertion: a stuck component fails the test with
what never happened and what was seen instead, rather than hanging the suite.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

T = TypeVar("T")
DEFAULT_TIMEOUT = 300.0


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT,
    why: Callable[[], str] | None = None,
    interval: float = 0.5,
) -> T:
    """Poll `probe` until it returns something truthy and return that. An API error
    counts as "not yet" (the server may be restarting); `why()` describes the state for
    the failure message."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except ApiException as exc:
            last = f"API error {exc.status}: {exc.reason}"
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            seen = why() if why else f"last seen: {last!r}"
            pytest.fail(
                f"timed out after {timeout:.0f}s waiting for {what} ({seen})", pytrace=False
            )
        time.sleep(interval)


def wait_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.3,
) -> T:
    """Poll `fetch` until `done` holds for what it returns, and return that (wait_for's
    bound and failure, for a probe whose answer is interesting whether done or not)."""
    seen: list[T] = []

    def probe() -> tuple[T] | None:
        seen[:] = [fetch()]
        return (seen[0],) if done(seen[0]) else None

    why = lambda: f"last seen: {seen[0]!r}" if seen else "nothing seen"  # noqa: E731
    return wait_for(what, probe, timeout, why=why, interval=interval)[0]


@contextlib.contextmanager
def following(
    list_call: Callable[..., Any],
    *args: Any,
    on_event: Callable[[dict[str, Any]], None],
    **kwargs: Any,
) -> Iterator[None]:
    """While the block runs, a thread hands every watch event of `list_call(*args,
    **kwargs)` from now on (not the objects already there) to `on_event`, in the order
    the API server sends them: the order things happened, finer than any timestamp."""
    stream = watch.Watch()
    ready = threading.Event()

    def follow() -> None:
        listed = list_call(*args, limit=1, **kwargs)
        meta = listed["metadata"] if isinstance(listed, dict) else listed.metadata
        version = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
        ready.set()
        events = stream.stream(
            list_call, *args, resource_version=version, timeout_seconds=3600, **kwargs
        )
        with contextlib.suppress(ProtocolError):  # the stream cut when the block ends
            for event in events:
                on_event(event)

    threading.Thread(target=follow, daemon=True).start()
    ready.wait(60)
    try:
        yield
    finally:
        stream.stop()
