"""Prometheus series of the client keys, read from the service at each scrape.

``nfrx_key_requests_total{key,model,outcome}`` (``success``, ``error``, ``cancelled``,
``refused``), ``nfrx_key_tokens_total{key,model,kind}`` (``input``, ``output``),
``nfrx_key_last_used_timestamp_seconds{key}`` and ``nfrx_keys{status}``.

The label set is bounded: ``key`` is a key's *name* (chosen by the admin, unique for good, so a
series never changes hands), for the first :data:`MAX_KEY_SERIES` keys by creation; the counts
of any later key are summed under ``(other)``. ``model`` is an agent's model id (at most
``MAX_MODELS_PER_KEY`` per key, then ``(other)``), ``-`` for requests without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nfrx.plugins.keys.model import ACTIVE, DISABLED, EXPIRED, REVOKED
from nfrx.plugins.keys.service import OTHER
from nfrx.plugins.keys.store import UsageCounts

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

    from nfrx.plugins.keys.service import KeysService

MAX_KEY_SERIES: Final = 200
"""Keys with series of their own; later keys are counted under ``key="(other)"``."""


class KeyCollector:
    def __init__(self, service: KeysService) -> None:
        self._service = service

    def describe(self) -> Iterable[Metric]:
        return self._families()

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            CounterMetricFamily(
                "nfrx_key_requests",
                "Requests made with a client key, by key name, the agent's model (- for none) "
                "and outcome (success, error, cancelled by the client, refused by the key's "
                "rules).",
                labels=["key", "model", "outcome"],
            ),
            CounterMetricFamily(
                "nfrx_key_tokens",
                "Tokens reported in the answers to a client key's requests, by key, model and "
                "kind (input/output).",
                labels=["key", "model", "kind"],
            ),
            GaugeMetricFamily(
                "nfrx_key_last_used_timestamp_seconds",
                "When a client key was last used (Unix seconds).",
                labels=["key"],
            ),
            GaugeMetricFamily("nfrx_keys", "Client keys by status.", labels=["status"]),
        )

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        requests, tokens, last_used, statuses = families
        service = self._service
        named = {key.id for key in service.all_keys()[:MAX_KEY_SERIES]}
        rows: dict[tuple[str, str], UsageCounts] = {}
        for key, model, counts in service.usage_rows():
            label = key.name if key.id in named else OTHER
            rows.setdefault((label, model), UsageCounts()).add(counts)
        latest: dict[str, float] = {}
        for (label, model), counts in rows.items():
            success = counts.requests - counts.errors - counts.cancelled - counts.refused
            for outcome, value in (
                ("success", success),
                ("error", counts.errors),
                ("cancelled", counts.cancelled),
                ("refused", counts.refused),
            ):
                requests.add_metric([label, model, outcome], value)
            tokens.add_metric([label, model, "input"], counts.input_tokens)
            tokens.add_metric([label, model, "output"], counts.output_tokens)
            if counts.last_used is not None:
                latest[label] = max(latest.get(label, 0.0), counts.last_used)
        for label, when in latest.items():
            last_used.add_metric([label], when)
        summary = service.summary(service.clock())
        for status in (ACTIVE, DISABLED, EXPIRED, REVOKED):
            statuses.add_metric([status], summary[status])
        return list(families)
