"""The adapter registry as a fold of ADAPTERS events: states, champion per model, rollback, rebuild."""

from __future__ import annotations

import pytest
from nightshift.v1 import events_pb2, trainer_pb2
from nightshift_trainer.registry import Registry, RegistryError, UnknownAdapterError

T = trainer_pb2
E = events_pb2
MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def trained(adapter_id: str, model: str = MODEL) -> E.AdapterTrained:
    return E.AdapterTrained(
        adapter=T.Adapter(adapter_id=adapter_id, model=model, state=T.ADAPTER_STATE_UNSPECIFIED)
    )


def fold(events) -> Registry:
    registry = Registry()
    for n, event in enumerate(events):
        registry.apply(f"e{n}", event)
    return registry


def states(registry: Registry) -> dict[str, str]:
    return {a.adapter_id: T.AdapterState.Name(a.state) for a in registry.listing()}


def test_a_trained_adapter_is_a_candidate_and_the_base_model_is_champion():
    registry = fold([trained("a")])
    assert states(registry) == {"a": "ADAPTER_CANDIDATE"}
    assert registry.champion(MODEL) is None


def test_promotion_retires_the_previous_champion_and_rollback_reinstates_it():
    registry = Registry()
    events = [trained("a"), trained("b")]
    for n, e in enumerate(events):
        registry.apply(f"t{n}", e)
    promote_a = registry.promotion("a", "gate: 3 gains")
    assert promote_a.previous_champion_id == ""
    registry.apply("p1", promote_a)
    promote_b = registry.promotion("b", "gate: 2 gains")
    assert promote_b.previous_champion_id == "a"
    registry.apply("p2", promote_b)
    assert states(registry) == {"a": "ADAPTER_RETIRED", "b": "ADAPTER_CHAMPION"}

    back = registry.rollback(MODEL, "regression found in production")
    assert (back.from_adapter_id, back.to_adapter_id) == ("b", "a")
    registry.apply("r1", back)
    assert states(registry) == {"a": "ADAPTER_CHAMPION", "b": "ADAPTER_RETIRED"}
    assert registry.champion(MODEL).adapter_id == "a"
    assert registry.champion(MODEL).reason == "regression found in production"

    back = registry.rollback(MODEL, "again")
    assert (back.from_adapter_id, back.to_adapter_id) == ("a", "")
    registry.apply("r2", back)
    assert registry.champion(MODEL) is None
    with pytest.raises(RegistryError, match="base model already serves"):
        registry.rollback(MODEL, "nothing left")


def test_rejection_only_of_candidates_and_unknown_ids_are_named():
    registry = fold([trained("a")])
    registry.apply("x", registry.rejection("a", "2 frozen regressions"))
    assert states(registry) == {"a": "ADAPTER_REJECTED"}
    assert registry.get("a").reason == "2 frozen regressions"
    with pytest.raises(RegistryError, match="only a candidate"):
        registry.rejection("a", "twice")
    with pytest.raises(UnknownAdapterError, match="ghost"):
        registry.promotion("ghost", "")


def test_champions_are_per_model():
    registry = fold([trained("small"), trained("big", model="qwen2.5-coder-1.5b-instruct-q4_k_m")])
    registry.apply("p1", registry.promotion("small", ""))
    registry.apply("p2", registry.promotion("big", ""))
    assert registry.champion(MODEL).adapter_id == "small"
    assert registry.champion("qwen2.5-coder-1.5b-instruct-q4_k_m").adapter_id == "big"
    assert states(registry) == {"small": "ADAPTER_CHAMPION", "big": "ADAPTER_CHAMPION"}


def test_promoting_the_champion_or_a_retired_adapter_is_refused():
    registry = fold([trained("a"), trained("b")])
    registry.apply("p1", registry.promotion("a", ""))
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promotion("a", "")
    registry.apply("p2", registry.promotion("b", ""))
    with pytest.raises(RegistryError, match="retired"):
        registry.promotion("a", "")


def test_replaying_the_same_events_rebuilds_the_same_registry_and_duplicates_change_nothing():
    live = Registry()
    log: list[tuple[str, object]] = []

    def do(event_id, event):
        live.apply(event_id, event)
        log.append((event_id, event))

    do("t1", trained("a"))
    do("t2", trained("b"))
    do("p1", live.promotion("a", "gate"))
    do("j1", live.rejection("b", "gate"))
    do("t3", trained("c"))
    do("p2", live.promotion("c", "gate"))
    do("r1", live.rollback(MODEL, "manual"))

    rebuilt = Registry()
    for event_id, event in log + log:  # every event delivered twice
        rebuilt.apply(event_id, event)
    assert (
        states(rebuilt)
        == states(live)
        == {
            "a": "ADAPTER_CHAMPION",
            "b": "ADAPTER_REJECTED",
            "c": "ADAPTER_RETIRED",
        }
    )
    assert rebuilt.champions == live.champions
    assert rebuilt.history == live.history
