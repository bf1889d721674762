"""Prometheus metrics, read from the ledger and the database at scrape time (a custom collector,
so a scrape always sees the present: nothing is cached between scrapes)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .catalog import reflect_table
from .dialects import dialect_for
from .errors import DbsweepError
from .health import policy_tables
from .kinds import kind_named
from .ledger import Ledger
from .observers import RunObserver
from .policy import Policy
from .redact import redact
from .stats import phase_stats
from .target import Target


class DbsweepCollector:
    """Every scrape: rows changed, run durations and last successes from the ledger; size, rows
    and dead tuples of the policy's tables; what each kind measures (retention: rows due and the
    oldest row's age, the seed's favourite)."""

    def __init__(self, policy: Policy, target: Target):
        self.policy, self.target = policy, target

    def describe(self):
        return []  # collected live at scrape time only; nothing to register ahead

    def collect(self):
        yield from self._ledger()
        yield from self._database()

    def _ledger(self):
        ledger = Ledger(self.target.engine)
        ledger.ensure()
        name = self.policy.name
        changed = CounterMetricFamily("dbsweep_rows_changed", "Rows changed (deleted, updated, moved) by runs not "
                                      "undone since", labels=["policy", "phase", "table"])
        for (phase, table), rows in sorted(ledger.rows_by_table(name).items()):
            changed.add_metric([name, phase, table], rows)
        duration = GaugeMetricFamily("dbsweep_run_duration_seconds", "Median duration of the phase's finished runs",
                                     labels=["policy", "phase"])
        success = GaugeMetricFamily("dbsweep_last_success_timestamp_seconds",
                                    "When the phase's last successful run finished", labels=["policy", "phase"])
        runs = GaugeMetricFamily("dbsweep_runs", "Runs started, by outcome", labels=["policy", "phase", "outcome"])
        for stats in phase_stats(ledger, name, [p.name for p in self.policy.phases]):
            if stats.median_seconds is not None:
                duration.add_metric([name, stats.phase], stats.median_seconds)
            if stats.last_success is not None:
                success.add_metric([name, stats.phase], stats.last_success.timestamp())
            runs.add_metric([name, stats.phase, "succeeded"], stats.succeeded)
            runs.add_metric([name, stats.phase, "other"], stats.runs - stats.succeeded)
            runs.add_metric([name, stats.phase, "refused"], stats.refused)
        yield from (changed, duration, success, runs)

    def _database(self):
        name = self.policy.name
        size = GaugeMetricFamily("dbsweep_table_size_bytes", "Table size with indexes and TOAST", labels=["policy", "table"])
        rows = GaugeMetricFamily("dbsweep_table_rows", "Rows in the table (exact)", labels=["policy", "table"])
        dead = GaugeMetricFamily("dbsweep_dead_tuples", "Dead tuples, from the statistics", labels=["policy", "table"])
        measured: dict[str, GaugeMetricFamily] = {}
        now = datetime.now(timezone.utc)
        with self.target.engine.connect() as conn:
            dialect = dialect_for(conn)
            for qualified in policy_tables(self.policy):
                try:
                    table = reflect_table(conn, qualified)
                except DbsweepError:
                    continue  # retired, or not there yet: health says so
                rows.add_metric([name, qualified], conn.execute(sa.select(sa.func.count()).select_from(table)).scalar())
                stats = dialect.table_stats(conn, table)
                if stats is not None:
                    dead.add_metric([name, qualified], stats[1])
                    size.add_metric([name, qualified], stats[2])
            for phase in self.policy.phases:
                try:
                    numbers = kind_named(phase.kind).measures(phase, conn, dialect, now)
                except DbsweepError:
                    continue
                for metric, value in numbers.items():
                    family = measured.setdefault(metric, GaugeMetricFamily(
                        f"dbsweep_{metric}", f"{metric.replace('_', ' ')} (measured by the phase's kind)",
                        labels=["policy", "phase", "table"]))
                    family.add_metric([name, phase.name, ", ".join(kind_named(phase.kind).tables(phase))], value)
        yield from (size, rows, dead, *measured.values())


def serve(policy: Policy, target: Target, host: str, port: int):
    """An HTTP exporter on host:port for this policy; returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(DbsweepCollector(policy, target))
    return start_http_server(port, addr=host, registry=registry)


PUSHGATEWAY_ENV = "DBSWEEP_PUSHGATEWAY"


class PushgatewayObserver(RunObserver):
    """A run's own figures, pushed when it ends to the Pushgateway in DBSWEEP_PUSHGATEWAY with
    `pushadd` under job `dbsweep` and the policy and phase as grouping key: a run that failed or
    stopped early pushes no last-success time, so the one already there stays."""

    def __init__(self, gateway: str, policy: str, phase: str):
        self.gateway, self.policy, self.phase = gateway, policy, phase

    def on_finish(self, report) -> None:
        ended = "last_success" if report.state == "finished" else "last_stop"
        self._push(ended, report.seconds, report.rows_this_session)

    def on_error(self, plan, error: BaseException, seconds: float) -> None:
        self._push("last_failure", seconds, None)

    def _push(self, ended: str, seconds: float, rows: int | None) -> None:
        try:
            self._pushadd(ended, seconds, rows)
        except Exception as exc:  # the run's own outcome stands; the push is its report, said once
            sys.stderr.write(f"dbsweep: warning: the push to {PUSHGATEWAY_ENV} failed: {redact(str(exc))}\n")

    def _pushadd(self, ended: str, seconds: float, rows: int | None) -> None:
        from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

        registry = CollectorRegistry()
        Gauge(f"dbsweep_{ended}_timestamp_seconds", f"When a run of the phase ended ({ended.replace('_', ' ')})",
              registry=registry).set_to_current_time()
        Gauge("dbsweep_run_duration_seconds", "Duration of the phase's last run", registry=registry).set(seconds)
        if rows is not None:
            Gauge("dbsweep_run_rows", "Rows the phase's last run changed", registry=registry).set(rows)
        pushadd_to_gateway(self.gateway, job="dbsweep", grouping_key={"policy": self.policy, "phase": self.phase},
                           registry=registry, timeout=10)
