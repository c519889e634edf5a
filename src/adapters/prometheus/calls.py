"""Every served call counted in plain Python, rendered as Prometheus series on scrape.

A daemon's every call passes through `observe_call`; with prometheus-client's own Counter and
Histogram that was three locked value updates and a bucket search in Python per call, more
instructions than the rest of a Stat above Python's floor (bench/instructions_bench.py). Here a
call is a dict lookup, two integer additions and a `bisect`; `CallsCollector.collect` builds the
same series prometheus-client would have exported (names, labels, HELP/TYPE, buckets, `_sum`,
`_count`, `_created`) from these records when a scrape asks.

Threads: the records are written by the thread that runs the daemon's event loop (the measuring
decorators run there) and read there too (the /metrics endpoint is served on the loop), so no
update is ever lost. A record is created under a lock, and a scrape copies the table under it, so a
scrape from another thread (`generate_latest` anywhere) never sees the table change size while it
walks it; its figures may then lag one call behind.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from itertools import accumulate
from collections.abc import Iterator

from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from snapmux.domain import metrics as m

INF = float("inf")


class _Duration:
    """One (service, method)'s latency histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("buckets", "sum", "created")

    def __init__(self, bounds: int) -> None:
        self.buckets = [0] * bounds
        self.sum = 0.0
        self.created = time.time()


class _Calls:
    """One (service, method, code): how many calls ended so, and the histogram they share."""

    __slots__ = ("count", "duration", "created")

    def __init__(self, duration: _Duration) -> None:
        self.count = 0
        self.duration = duration
        self.created = time.time()


class CallsCollector:
    """`snapmux_requests_total`, `snapmux_request_errors_total` and `snapmux_request_duration_seconds`
    (domain/metrics.py), registered in one injected CollectorRegistry. A family shows once it
    would have with prometheus-client's metrics: the histogram's HELP/TYPE from the start, the
    counters' from their first call (the errors' from the first failure)."""

    def __init__(self) -> None:
        self._bounds = (*m.REQUEST_DURATION_BUCKETS, INF)
        self._les = tuple(map(floatToGoString, self._bounds))
        self._calls: dict[tuple[str, str, str], _Calls] = {}
        self._durations: dict[tuple[str, str], _Duration] = {}
        self._lock = threading.Lock()

    def observe(self, service: str, method: str, code: str, seconds: float) -> None:
        calls = self._calls.get((service, method, code))
        if calls is None:
            calls = self._new(service, method, code)
        calls.count += 1
        duration = calls.duration
        duration.buckets[bisect_left(self._bounds, seconds)] += 1  # the first bound >= seconds, as `le` means
        duration.sum += seconds

    def _new(self, service: str, method: str, code: str) -> _Calls:
        with self._lock:
            duration = self._durations.get((service, method))
            if duration is None:
                duration = self._durations[(service, method)] = _Duration(len(self._bounds))
            calls = self._calls[(service, method, code)] = _Calls(duration)
            return calls

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            calls, durations = list(self._calls.items()), list(self._durations.items())
        created = prometheus_metrics._use_created  # prometheus-client's PROMETHEUS_DISABLE_CREATED_SERIES
        if calls:
            yield self._counter(m.REQUESTS, calls, created)
        failed = [(labels, record) for labels, record in calls if labels[2] != m.OK]
        if failed:
            yield self._counter(m.REQUEST_ERRORS, failed, created)
        yield self._histogram(durations, created)

    @staticmethod
    def _counter(spec: m.CounterSpec, calls: list[tuple[tuple[str, str, str], _Calls]], created: bool) -> Metric:
        family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        for labels, record in calls:
            family.add_metric(labels, float(record.count), created=record.created if created else None)
        return family

    def _histogram(self, durations: list[tuple[tuple[str, str], _Duration]], created: bool) -> Metric:
        names = m.REQUEST_DURATION_LABELS
        family = HistogramMetricFamily(m.REQUEST_DURATION_NAME, m.REQUEST_DURATION_HELP, labels=names)
        for labels, record in durations:
            cumulative = list(zip(self._les, map(float, accumulate(list(record.buckets)))))
            family.add_metric(labels, cumulative, record.sum)
            if created:
                family.add_sample(f"{m.REQUEST_DURATION_NAME}_created", dict(zip(names, labels)), record.created)
        return family
