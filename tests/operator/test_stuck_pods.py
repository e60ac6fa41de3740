"""When a loader Pod that has not started counts as stuck (pure: no cluster needed; the
kubelet's real words for an absent and a root image are in test_real_node.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from productimport.operator.reconcile import _cannot_start


def _pod(reason: str, age: timedelta) -> dict:
    created = (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    waiting = {"reason": reason, "message": f"the kubelet says {reason}"}
    return {
        "metadata": {"name": "p", "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "loader", "state": {"waiting": waiting}}]},
    }


def test_a_pull_back_off_fails_only_after_the_grace_period():
    young, old = timedelta(seconds=30), timedelta(seconds=400)
    assert _cannot_start([_pod("ImagePullBackOff", young)], pull_grace=300) is None
    reason, message = _cannot_start([_pod("ImagePullBackOff", old)], pull_grace=300)
    assert reason == "ImageUnavailable" and "the kubelet says ImagePullBackOff" in message


def test_what_no_wait_cures_fails_at_once_and_a_starting_pod_does_not():
    young = timedelta(seconds=1)
    assert _cannot_start([_pod("ErrImageNeverPull", young)], 300)[0] == "ImageUnavailable"
    assert _cannot_start([_pod("CreateContainerConfigError", young)], 300)[0] == "PodCannotStart"
    assert _cannot_start([_pod("ContainerCreating", young)], 300) is None
    assert _cannot_start([], 300) is None
