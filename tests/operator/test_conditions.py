"""Status documents: conditions first (kstatus / Argo CD read them), phase derived."""

from __future__ import annotations

from productimport.operator.conditions import is_terminal, status_patch

OBJ = {"metadata": {"name": "x", "generation": 2}, "spec": {}}


def types(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_running_is_reconciling_and_not_yet_ready():
    status = status_patch("running", "JobRunning", "importing", OBJ)["status"]
    assert types(status) == {"Reconciling": "True", "Ready": "Unknown"}
    assert status["phase"] == "Running" and status["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])


def test_queued_phase_comes_from_the_reason():
    status = status_patch("queued", "Queued", "waiting", OBJ)["status"]
    assert status["phase"] == "Queued"


def test_success_and_failure_are_terminal_with_the_kstatus_conditions():
    ok = {**OBJ, "status": status_patch("succeeded", "ImportSucceeded", "done", OBJ)["status"]}
    assert types(ok["status"]) == {"Ready": "True", "Succeeded": "True"}
    assert ok["status"]["phase"] == "Succeeded" and is_terminal(ok)
    bad = {**OBJ, "status": status_patch("failed", "ParseError", "bad", OBJ)["status"]}
    assert types(bad["status"]) == {"Ready": "False", "Succeeded": "False", "Stalled": "True"}
    assert bad["status"]["phase"] == "Failed" and is_terminal(bad)
    assert {c["reason"] for c in bad["status"]["conditions"]} == {"ParseError"}


def test_stale_status_is_not_terminal():
    ok = {**OBJ, "status": status_patch("succeeded", "ImportSucceeded", "done", OBJ)["status"]}
    newer = {**ok, "metadata": {"name": "x", "generation": 3}}
    assert not is_terminal(newer)


def test_transition_time_moves_only_when_the_status_value_changes():
    first = status_patch("queued", "Queued", "waiting", OBJ)["status"]
    stamped = [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first["conditions"]]
    again = status_patch("running", "JobRunning", "importing", {**OBJ, "status": {
        "conditions": stamped}})["status"]  # fmt: skip
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2020-01-01T00:00:00Z"}
    done = status_patch("succeeded", "ImportSucceeded", "ok", {**OBJ, "status": {
        "conditions": stamped}})["status"]  # fmt: skip
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] != "2020-01-01T00:00:00Z"
