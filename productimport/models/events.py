"""A Kubernetes Event as the operator and the API both record them (about a
ProductImport, or about a namespace as a whole): one shape, so `kubectl get events`
shows theirs alike."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes import client as k8s

# The API server refuses longer messages.
MESSAGE_LIMIT = 1024


def event_body(
    involved: k8s.V1ObjectReference, type_: str, reason: str, message: str, component: str
) -> k8s.CoreV1Event:
    """A new Event about `involved`, in its namespace, reported by `component`."""
    stamp = datetime.now(UTC)
    return k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(
            generate_name=f"{involved.name[:200]}.", namespace=involved.namespace
        ),
        involved_object=involved,
        type=type_,
        reason=reason,
        message=message[:MESSAGE_LIMIT],
        source=k8s.V1EventSource(component=component),
        reporting_component=component,
        reporting_instance=component,
        first_timestamp=stamp,
        last_timestamp=stamp,
        count=1,
    )
