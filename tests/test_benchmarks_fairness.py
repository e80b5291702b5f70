"""``python -m benchmarks.fairness`` runs, and shows dbpool serving its waiting threads in turn."""

from __future__ import annotations

import pytest

from benchmarks import fairness


def test_fairness_table_has_both_approaches(capsys: pytest.CaptureFixture[str]) -> None:
    fairness.main(["--threads", "16", "--seconds", "0.3"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["dbpool", "SQLAlchemy"]


def test_every_waiting_thread_gets_its_turn() -> None:
    # 32 threads on 15 connections: with waiters served in the order they came, each
    # thread gets about as many requests in as any other; none is left out.
    row = fairness.dbpool_shared(32, 0.6, seed=1)
    assert row["served_min"] > 0
    assert row["served_min"] >= row["served_max"] / 2, row
