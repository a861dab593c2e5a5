"""``/metrics``: the store's figures in Prometheus text format, computed per scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ..stats import stats
from . import _read
from ._store import Store

__all__ = ["metrics_text"]


class _Collector:
    """Yields the figures of one store (a custom collector: nothing is kept between scrapes)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        """Compute the figures now."""
        up = GaugeMetricFamily("tasklog_store_up", "1 when the store answered this scrape, else 0.")
        try:
            families = self._figures(self.store.get())
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _figures(self, repo: Any) -> list[Metric]:
        figures = stats(repo)
        runs = GaugeMetricFamily(
            "tasklog_runs", "Runs in the store, by outcome (failure: fail and crash; other: "
            "inaction and terminate; running: not finished).", labels=["task", "outcome"],
        )
        running = GaugeMetricFamily(
            "tasklog_running_runs", "Runs that started and have not finished.", labels=["task"]
        )
        rate = GaugeMetricFamily(
            "tasklog_success_ratio", "Successes over finished runs (0-1).", labels=["task"]
        )
        runtime = GaugeMetricFamily(
            "tasklog_run_duration_seconds",
            "Runtime of finished runs: nearest-rank quantiles (1 is the maximum).",
            labels=["task", "quantile"],
        )
        mean = GaugeMetricFamily(
            "tasklog_run_duration_mean_seconds", "Mean runtime of finished runs.", labels=["task"]
        )
        last_success = GaugeMetricFamily(
            "tasklog_last_success_timestamp_seconds",
            "When the task's newest successful run ended (Unix time).", labels=["task"],
        )
        last_start = GaugeMetricFamily(
            "tasklog_last_run_start_timestamp_seconds",
            "When the task's newest run started (Unix time).", labels=["task"],
        )
        last_duration = GaugeMetricFamily(
            "tasklog_last_run_duration_seconds",
            "Runtime of the task's newest finished run.", labels=["task"],
        )
        last_ok = GaugeMetricFamily(
            "tasklog_last_run_success",
            "1 when the task's newest finished run succeeded, else 0.", labels=["task"],
        )
        names = list(figures.tasks)
        successes = _read.newest_closed(repo, names, "success")
        finished = _read.newest_closed(repo, names)
        started = _read.recent_runs(repo, names, 1)
        for name, task in figures.tasks.items():
            open_runs = task.runs - task.finished
            for outcome, n in (
                ("success", task.successes), ("failure", task.failures),
                ("other", task.other), ("running", open_runs),
            ):
                runs.add_metric([name, outcome], n)
            running.add_metric([name], open_runs)
            if task.success_rate is not None:
                rate.add_metric([name], task.success_rate)
            for quantile, value in (
                ("0.5", task.p50_runtime), ("0.95", task.p95_runtime), ("1", task.max_runtime)
            ):
                if value is not None:
                    runtime.add_metric([name, quantile], value)
            if task.mean_runtime is not None:
                mean.add_metric([name], task.mean_runtime)
            success = successes.get(name)
            if success is not None and success.end is not None:
                last_success.add_metric([name], success.end.timestamp())
            newest = finished.get(name)
            if started.get(name):
                last_start.add_metric([name], started[name][0].start.timestamp())
            if newest is not None and newest.runtime is not None:
                last_duration.add_metric([name], newest.runtime.total_seconds())
                last_ok.add_metric([name], 1 if newest.outcome == "success" else 0)
        return [runs, running, rate, runtime, mean, last_success, last_start, last_duration,
                last_ok]


def make_registry(store: Store) -> CollectorRegistry:
    """A registry holding the store's collector (one per application)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(store))
    return registry


def metrics_text(registry: CollectorRegistry) -> bytes:
    """The exposition text of *registry* (reads the store: call it in a worker thread)."""
    return generate_latest(registry)
