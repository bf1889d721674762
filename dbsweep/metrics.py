"""Prometheus metrics, read from the ledger and the database's statistics at scrape time (a custom
collector). A scrape costs milliseconds whatever the tables' size: row counts are the statistics'
estimates, rows due are what the latest plan or check counted less what its runs did since (with
that figure's age), and nothing is scanned or written. Concurrent scrapes share one reading, which
is kept for a few seconds."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .catalog import reflect_table
from .dialects import dialect_for
from .errors import BadInput, DbsweepError
from .health import policy_tables
from .kinds import kind_named
from .ledger import Ledger
from .observers import RunObserver
from .policy import Policy
from .redact import redact
from .retries import first_line
from .stats import phase_stats
from .target import Target, connect, target_names

# name -> (family, help, labels after `policy` (and `target`, for a fleet))
FAMILIES = {
    "dbsweep_rows_changed": (CounterMetricFamily, "Rows changed (deleted, updated, moved) by runs not undone since",
                             ["phase", "table"]),
    "dbsweep_run_duration_seconds": (GaugeMetricFamily, "Median duration of the phase's finished runs", ["phase"]),
    "dbsweep_last_success_timestamp_seconds": (GaugeMetricFamily, "When the phase's last successful run finished",
                                               ["phase"]),
    "dbsweep_runs": (GaugeMetricFamily, "Runs started, by outcome", ["phase", "outcome"]),
    "dbsweep_table_size_bytes": (GaugeMetricFamily, "Table size with indexes and TOAST", ["table"]),
    "dbsweep_table_rows": (GaugeMetricFamily, "Rows in the table: the statistics' live-row estimate (an exact count "
                           "on SQLite, which keeps none)", ["table"]),
    "dbsweep_dead_tuples": (GaugeMetricFamily, "Dead tuples, from the statistics", ["table"]),
}


class DbsweepCollector:
    """Every scrape: rows changed, run durations and last successes from the ledger; size, rows
    and dead tuples of the policy's tables; what each kind measures (retention: rows due and the
    oldest row's age, the seed's favourite).

    Given no target, the policy's env is a fleet: its targets are listed again at every scrape (a
    discovered fleet grows), every sample also names its `target`, and `dbsweep_target_up` is 0 for
    a target that could not be read (its line on stderr), so one database down hides no other."""

    def __init__(self, policy: Policy, target: Target | None = None, env: str | None = None, fresh_s: float = 5.0,
                 clock=time.monotonic):
        self.policy, self.target, self.env = policy, target, env
        self.fleet: dict[str, Target] = {}
        self.fresh_s, self.clock = fresh_s, clock
        self.reading = threading.Lock()
        self.last: tuple[float, list] | None = None
        self.readings = 0  # how many times the databases were read (a test counts them)

    def describe(self):
        return []  # collected live at scrape time only; nothing to register ahead

    def collect(self):
        """One reading at a time: a scrape that arrives while another reads waits for it and gets
        the same families; a reading younger than `fresh_s` is served again."""
        with self.reading:
            if self.last is None or self.clock() - self.last[0] >= self.fresh_s:
                self.last = (self.clock(), list(self._read()))
                self.readings += 1
            families = self.last[1]
        yield from families

    def _read(self):
        if self.target is not None:
            yield from _families(self.policy.name, None, [((), self._samples(self.target))])
            return
        up = GaugeMetricFamily("dbsweep_target_up", "1 when the fleet target could be read at this scrape",
                               labels=["policy", "target"])
        read = []
        for name in target_names(self.policy, self.env):
            try:
                read.append(((name,), self._samples(self._target(name))))
                up.add_metric([self.policy.name, name], 1)
            except (DbsweepError, sa.exc.DBAPIError) as exc:
                up.add_metric([self.policy.name, name], 0)
                sys.stderr.write(f"dbsweep metrics: target {name}: {first_line(exc)}\n")
        yield up
        yield from _families(self.policy.name, "target", read)

    def _target(self, name: str) -> Target:
        if name not in self.fleet:
            self.fleet[name] = connect(self.policy, self.env, name)
        return self.fleet[name]

    def _samples(self, target: Target) -> list[tuple[str, list[str], float]]:
        """(family, labels after policy/target, value) of one database, all read before any is kept."""
        return [*self._ledger(target), *self._database(target)]

    def _ledger(self, target: Target):
        ledger = Ledger(target.engine)
        if not ledger.exists():  # a database nothing has run on yet: the exporter creates nothing
            return
        name = self.policy.name
        for (phase, table), rows in sorted(ledger.rows_by_table(name).items()):
            yield "dbsweep_rows_changed", [phase, table], rows
        for stats in phase_stats(ledger, name, [p.name for p in self.policy.phases]):
            if stats.median_seconds is not None:
                yield "dbsweep_run_duration_seconds", [stats.phase], stats.median_seconds
            if stats.last_success is not None:
                yield "dbsweep_last_success_timestamp_seconds", [stats.phase], stats.last_success.timestamp()
            yield "dbsweep_runs", [stats.phase, "succeeded"], stats.succeeded
            yield "dbsweep_runs", [stats.phase, "other"], stats.runs - stats.succeeded
            yield "dbsweep_runs", [stats.phase, "refused"], stats.refused

    def _database(self, target: Target):
        now = datetime.now(timezone.utc)
        samples = []
        ledger = Ledger(target.engine)
        has_ledger = ledger.exists()
        with target.engine.connect() as conn, conn.begin():
            dialect = dialect_for(conn)
            dialect.read_only(conn)
            for qualified in policy_tables(self.policy):
                try:
                    table = reflect_table(conn, qualified)
                except DbsweepError:
                    continue  # retired, or not there yet: health says so
                stats = dialect.table_stats(conn, table)
                if stats is not None:
                    samples.append(("dbsweep_table_rows", [qualified], stats[0]))
                    samples.append(("dbsweep_dead_tuples", [qualified], stats[1]))
                    samples.append(("dbsweep_table_size_bytes", [qualified], stats[2]))
                else:  # no statistics to read (SQLite, a local file): counted
                    samples.append(("dbsweep_table_rows", [qualified],
                                    conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()))
            for phase in self.policy.phases:
                kind = kind_named(phase.kind)
                latest = ledger.latest_plan(self.policy.name, phase.name, target.env) if has_ledger else None
                done = ledger.rows_for_plan(latest.plan_id) if latest is not None else 0
                try:
                    numbers = kind.gauges(phase, conn, dialect, now, latest, done)
                except DbsweepError:
                    continue
                for metric, value in numbers.items():
                    samples.append((f"dbsweep_{metric}", [phase.name, ", ".join(kind.tables(phase))], value))
        return samples


def _families(policy: str, target_label: str | None, read: list[tuple[tuple, list]]):
    """The metric families of the samples read, each database's labelled with its target."""
    families: dict[str, object] = {}
    for target, samples in read:
        for name, labels, value in samples:
            if name not in families:
                family, text, rest = FAMILIES.get(name) or (
                    GaugeMetricFamily, f"{name[len('dbsweep_'):].replace('_', ' ')} (measured by the phase's kind)",
                    ["phase", "table"])
                families[name] = family(name, text, labels=["policy", *([target_label] if target_label else []), *rest])
            families[name].add_metric([policy, *target, *labels], value)
    return list(families.values())


def serve(policy: Policy, target: Target | None, host: str, port: int, env: str | None = None, fresh_s: float = 5.0):
    """An HTTP exporter on host:port for this policy (no target: every target of its fleet env);
    returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(DbsweepCollector(policy, target, env, fresh_s))
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:  # no such address (socket.gaierror), a port in use or not ours to take
        raise BadInput(f"--listen {host}:{port}: cannot listen there ({exc.strerror or exc})") from None


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
