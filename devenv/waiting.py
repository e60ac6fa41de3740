"""Bounded polling for tests against the local control plane.

A wait is a bound, never a performance assertion: a stuck component fails the test with
what never happened and what was seen instead, rather than hanging the suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes.client.exceptions import ApiException

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
