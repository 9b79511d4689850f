"""The adapter registry: which adapters exist and which one is champion, as a projection of events.

The registry is the only writer of the champion (DESIGN.md, "Who owns what"). Its state is the fold
of the ADAPTERS stream (AdapterTrained, AdapterPromoted, AdapterRejected, AdapterRolledBack) in
stream order, so it can be rebuilt from the events alone: `Registry.apply` is that fold, and the
service publishes an event before it applies it.

States: candidate -> champion | rejected; a champion -> retired when another is promoted or when it
is rolled back. A rollback makes the champion's predecessor (the adapter it replaced, possibly the
base model) champion again. There is one champion per model; "" stands for the base model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nightshift.v1 import events_pb2, trainer_pb2

T = trainer_pb2


class RegistryError(ValueError):
    """A registry operation that the current state does not allow."""


class UnknownAdapterError(KeyError):
    """No adapter with that id was ever trained."""

    def __str__(self) -> str:
        return f"no adapter {self.args[0]!r}"


@dataclass
class Registry:
    adapters: dict[str, T.Adapter] = field(default_factory=dict)
    # model -> champion adapter id; absent = the base model serves that model.
    champions: dict[str, str] = field(default_factory=dict)
    # model -> the champions that were replaced, oldest first ("" = the base model).
    history: dict[str, list[str]] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)

    # --- the fold ----------------------------------------------------------------------------

    def apply(self, event_id: str, event) -> bool:
        """Apply one ADAPTERS event; False when this event id was already applied."""
        if event_id in self.applied:
            return False
        self.applied.add(event_id)
        if isinstance(event, events_pb2.AdapterTrained):
            adapter = T.Adapter()
            adapter.CopyFrom(event.adapter)
            adapter.state = T.ADAPTER_CANDIDATE
            self.adapters[adapter.adapter_id] = adapter
        elif isinstance(event, events_pb2.AdapterPromoted):
            model = event.model or self._model_of(event.adapter_id)
            previous = self.champions.get(model, "")
            if previous and previous in self.adapters:
                self.adapters[previous].state = T.ADAPTER_RETIRED
            if previous != event.adapter_id:
                self.history.setdefault(model, []).append(previous)
            self.champions[model] = event.adapter_id
            self._set(event.adapter_id, T.ADAPTER_CHAMPION, event.reason)
        elif isinstance(event, events_pb2.AdapterRejected):
            self._set(event.adapter_id, T.ADAPTER_REJECTED, event.reason)
        elif isinstance(event, events_pb2.AdapterRolledBack):
            model = event.model or self._model_of(event.from_adapter_id)
            if event.from_adapter_id in self.adapters:
                self._set(event.from_adapter_id, T.ADAPTER_RETIRED, event.reason)
            history = self.history.get(model, [])
            if history and history[-1] == event.to_adapter_id:
                history.pop()
            if event.to_adapter_id:
                self.champions[model] = event.to_adapter_id
                self._set(event.to_adapter_id, T.ADAPTER_CHAMPION, event.reason)
            else:
                self.champions.pop(model, None)
        return True

    def _set(self, adapter_id: str, state: int, reason: str) -> None:
        adapter = self.adapters.get(adapter_id)
        if adapter is not None:
            adapter.state = state
            adapter.reason = reason

    def _model_of(self, adapter_id: str) -> str:
        adapter = self.adapters.get(adapter_id)
        return adapter.model if adapter is not None else ""

    # --- queries -----------------------------------------------------------------------------

    def get(self, adapter_id: str) -> T.Adapter:
        try:
            return self.adapters[adapter_id]
        except KeyError:
            raise UnknownAdapterError(adapter_id) from None

    def champion(self, model: str) -> T.Adapter | None:
        adapter_id = self.champions.get(model, "")
        return self.adapters.get(adapter_id) if adapter_id else None

    def listing(self) -> list[T.Adapter]:
        return list(self.adapters.values())

    # --- the events an operation would publish (validated against the current state) -----------

    def promotion(
        self, adapter_id: str, reason: str, gate_decision_id: str = ""
    ) -> events_pb2.AdapterPromoted:
        adapter = self.get(adapter_id)
        if adapter.state == T.ADAPTER_CHAMPION:
            raise RegistryError(f"{adapter_id} is already the champion of {adapter.model}")
        if adapter.state == T.ADAPTER_RETIRED:
            raise RegistryError(f"{adapter_id} is retired; roll back to reinstate an earlier champion")
        return events_pb2.AdapterPromoted(
            adapter_id=adapter_id,
            previous_champion_id=self.champions.get(adapter.model, ""),
            reason=reason,
            gate_decision_id=gate_decision_id,
            model=adapter.model,
        )

    def rejection(
        self, adapter_id: str, reason: str, gate_decision_id: str = ""
    ) -> events_pb2.AdapterRejected:
        adapter = self.get(adapter_id)
        if adapter.state != T.ADAPTER_CANDIDATE:
            state = T.AdapterState.Name(adapter.state)
            raise RegistryError(f"{adapter_id} is {state}, only a candidate can be rejected")
        return events_pb2.AdapterRejected(
            adapter_id=adapter_id, reason=reason, gate_decision_id=gate_decision_id
        )

    def rollback(self, model: str, reason: str) -> events_pb2.AdapterRolledBack:
        current = self.champions.get(model, "")
        if not current:
            raise RegistryError(f"the base model already serves {model}: nothing to roll back")
        history = self.history.get(model, [])
        previous = history[-1] if history else ""
        return events_pb2.AdapterRolledBack(
            from_adapter_id=current, to_adapter_id=previous, reason=reason, model=model
        )
