"""The benchmark's quick mode against the test server: a smoke test of the harness.

It checks that every approach, the cold storm and the micro part ran without
errors and that the result files are complete; nothing here is about speed.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from benchmarks import approaches, cli, micro, workloads
from tests.mariadb import MariaDBServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(
    mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], str]:
    """One quick run for the whole module: its results directory, JSON and printed text."""
    tmp = tmp_path_factory.mktemp("bench")
    config = tmp / "bench.yaml"
    config.write_text(yaml.safe_dump({"database": {"bench": mariadb.params()}}))
    out = tmp / "results"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(
            ["--quick", "--config", str(config), "--config-name", "bench", "--out", str(out)]
        )
    assert code == 0
    data = json.loads((out / "quick.json").read_text())
    return out, data, printed.getvalue()


def test_every_approach_runs_without_errors(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = quick_run
    every = {cls.key for cls in approaches.APPROACHES}
    assert set(data["settings"]["approaches"]) == every
    cells = data["cells"]
    assert {c["approach"] for c in cells} == every
    assert {c["workload"] for c in cells} == {w.key for w in workloads.WORKLOADS}
    assert {c["latency_ms"] for c in cells} == {0.0, 0.5}
    for cell in cells:
        where = f"{cell['approach']} / {cell['workload']} / {cell['latency_ms']} ms"
        assert cell["errors"] == 0, f"{where}: {cell.get('first_error') or cell.get('error')}"
        assert cell["requests"] > 0, where
        assert cell["throughput"] > 0, where
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], where
        assert cell["commands_per_request"] >= 0.9, where  # at least the query itself
        assert cell["peak_connections"] >= 1, where
        # Requests served per thread: the least- and the most-served thread bracket the mean.
        mean = cell["requests"] / cell["threads"]
        assert cell["served_min"] <= cell["served_median"] <= cell["served_max"], where
        assert cell["served_min"] <= mean <= cell["served_max"], where
        if cell["latency_ms"]:  # every request waits in recv() for its reply: one switch at least
            assert cell["client_switches"] >= 0.9, where


def test_server_commands_are_counted_per_request(
    quick_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, data, _ = quick_run
    cells = {(c["approach"], c["workload"]): c for c in data["cells"]}

    def near_one(cell: dict[str, Any], counter: str) -> None:
        # A request in flight when the window opens or closes is counted by the server
        # but not as a request, or the other way round: up to one per thread. Still
        # tight enough to tell one command per request from none or two.
        slack = 0.1 + cell["threads"] / cell["requests"]
        assert cell["per_request"][counter] == pytest.approx(1.0, abs=slack), counter

    # One write transaction is BEGIN, UPDATE, COMMIT on any approach.
    write = cells[("dedicated", "write")]
    near_one(write, "Com_commit")
    near_one(write, "Com_update")
    # DBUtils' PooledDB pings at checkout and rolls back at return, whatever the workload.
    pooled = cells[("dbutils-pooleddb", "point")]
    near_one(pooled, "Com_admin_commands")
    near_one(pooled, "Com_rollback")
    # A new connection per request shows up in the server's Connections counter.
    per_request = cells[("connect-per-request", "point")]
    assert per_request["opened_window"] >= 0.9 * per_request["requests"]


def test_storm_spike_and_micro_ran(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = quick_run
    assert data["settings"]["one_connect_ms"] >= data["settings"]["storm_delay_ms"]
    assert {s["approach"] for s in data["storm"]} == {cls.key for cls in approaches.APPROACHES}
    for storm in data["storm"]:
        assert storm["errors"] == 0, f"{storm['approach']}: {storm['first_error']}"
        assert storm["storm_ms"] >= data["settings"]["storm_delay_ms"], storm["approach"]
    assert {(m["approach"], m["threads"]) for m in data["micro"]} == {
        (key, threads) for key in micro.MICRO for threads in (1, 4)
    }
    assert {(m["approach"], m["threads"]) for m in data["micro_live"]} == {
        (key, threads) for key in micro.LIVE for threads in (1, 4)
    }
    for m in data["micro"] + data["micro_live"]:
        assert m["errors"] == 0, f"{m['approach']}: {m['first_error']}"
        assert m["ns_per_op"] > 0 and m["cpu_ns_per_op"] > 0
    spikes = data["spike"]
    assert {s["approach"] for s in spikes} == set(cli.SPIKE_APPROACHES)
    for spike in spikes:
        assert spike["errors"] == 0, f"{spike['approach']}: {spike['first_error']}"
        # The burst's threads all ran their query; the pool had 5 warm connections
        # and could open up to the burst's size.
        assert spike["burst_ms"] > spike["query_ms"], spike["approach"]
        assert 0 <= spike["opened"] <= spike["threads"], spike["approach"]


def test_bytecodes_are_attributed(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = quick_run
    attributed = data["attribution"]
    requests, cycles = attributed["requests"], attributed["cycles"]
    dedicated = requests["dedicated"]
    assert dedicated["packages"].get("dbpool", 0) == 0
    for key in ("dbpool-shared", "dbpool-persistent"):
        # The same PyMySQL work and the pool's own on top; its checkout and return
        # are among the pool's busiest functions.
        assert requests[key]["packages"]["dbpool"] > 0, key
        assert requests[key]["packages"]["pymysql"] > 0.8 * dedicated["packages"]["pymysql"]
        names = [name for name, _ in cycles[key]["top"]]
        assert "ConnectionPool.acquire" in names and "ConnectionPool.release" in names, key
    for key, cycle in cycles.items():
        assert cycle["total"] == sum(cycle["packages"].values()) > 0, key


def test_report_files(
    quick_run: tuple[Path, dict[str, Any], str], mysql_params: dict[str, Any]
) -> None:
    out, data, printed = quick_run
    md = (out / "quick.md").read_text()
    for heading in (
        "## Machine",
        "## Settings",
        "## Targets",
        "## Throughput",
        "## CPU time per request",
        "## Server commands per request",
        "## Cold storm",
        "## Spike",
        "## Checkout + return, live PyMySQL connection",
        "## Checkout + return, no I/O",
        "## Where the client's time goes",
        "## Every cell",
    ):
        assert heading in md
    for info in data["settings"]["approaches"].values():
        assert f"| {info['label']} |" in md
    assert data["machine"]["server"] and data["machine"]["cpu"]
    kinds = {t["kind"] for t in data["summary"]["targets"]}
    # 4 threads only: the overload targets (more threads than connections) do not apply.
    assert kinds == {"cpu", "ceiling", "ahead", "micro", "storm", "spike-opened", "spike-time"}
    # A quick run is a smoke test: it shows its figures but judges no target.
    assert "smoke test" in printed
    assert "Targets met:" not in printed and "✗" not in printed and "✓" not in printed
    for name in ("throughput", "throughput-others", "latency", "storm-micro"):
        png = out / f"quick-{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"(quick-{name}.png)" in md
    # The password never reaches the results.
    assert mysql_params["password"] not in md
    assert mysql_params["password"] not in (out / "quick.json").read_text()


def test_table_is_dropped(
    quick_run: tuple[Path, dict[str, Any], str], mysql_params: dict[str, Any]
) -> None:
    conn = pymysql.connect(**mysql_params)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE %s", (workloads.TABLE,))
            assert cur.fetchall() == ()
    finally:
        conn.close()
