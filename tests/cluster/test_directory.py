"""The fleet view: each agent once, with its instances, totals summed (pure)."""

from __future__ import annotations

from typing import Any

from nfrx.cluster.directory import Fleet, InstanceView, merge_agents


def entry(agent_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": agent_id,
        "name": agent_id,
        "status": "idle",
        "inflight": 0,
        "processed_total": 0,
        "failures_total": 0,
        "cancelled_total": 0,
        "processing_ms_total": 0.0,
        "avg_processing_ms": 0.0,
        "input_tokens_total": 0,
        "output_tokens_total": 0,
    }
    return {**base, **fields}


def fleet(*views: InstanceView) -> Fleet:
    here = InstanceView(
        id="a", url="ws://a", started_at=0, draining=False, version="", agents=(), this=True
    )
    return Fleet(instance_id="a", instances=(here, *views), degraded=False, queued_elsewhere=0)


def view(instance: str, *agents: dict[str, Any], draining: bool = False) -> InstanceView:
    return InstanceView(
        id=instance,
        url=f"ws://{instance}",
        started_at=0,
        draining=draining,
        version="",
        agents=agents,
    )


def test_alone_the_local_list_is_the_list() -> None:
    local = [entry("x")]
    assert merge_agents("llm", local, None) is local


def test_an_agent_on_several_instances_appears_once_with_its_totals_summed() -> None:
    local = [entry("x", processed_total=2, processing_ms_total=20.0)]
    merged = merge_agents(
        "llm",
        local,
        fleet(
            view(
                "b",
                {
                    **entry("x", inflight=1, processed_total=1, processing_ms_total=10.0),
                    "kind": "llm",
                },
            ),
            view(
                "c", {**entry("y", processed_total=4), "kind": "llm"}, {**entry("z"), "kind": "asr"}
            ),
        ),
    )
    assert [(m["id"], m["instances"]) for m in merged] == [("x", ["a", "b"]), ("y", ["c"])]
    x = merged[0]
    assert (x["processed_total"], x["inflight"], x["status"]) == (3, 1, "working")
    assert x["avg_processing_ms"] == 10.0
    assert merged[1]["processed_total"] == 4


def test_instances_are_listed_with_their_state() -> None:
    document = fleet(view("b", draining=True)).document()
    assert [(i["id"], i["state"], i["this"]) for i in document] == [
        ("a", "ready", True),
        ("b", "draining", False),
    ]
    degraded = Fleet(
        instance_id="a", instances=fleet().instances, degraded=True, queued_elsewhere=0
    )
    assert degraded.document()[0]["state"] == "degraded"
