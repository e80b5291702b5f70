"""``dbpool bench`` without a server: the read-only check, parameters, workload files, options."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dbpool.advisor import command
from dbpool.advisor.sqlcheck import BadStatement, UnsafeStatement, check_read_only, placeholders
from dbpool.advisor.workload import (
    WorkloadError,
    from_arguments,
    load_workload,
    parse_param,
    read_params_file,
)
from dbpool.cli import main


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select * from t where id = %s",
        "  \n\t SELECT 1;",
        "SELECT 1 ;  -- done\n",
        "(SELECT a FROM t) UNION (SELECT b FROM u)",
        "((SELECT 1))",
        "-- a comment\nSELECT 1",
        "# a comment\nSELECT 1",
        "/* a comment; DROP TABLE x */ SELECT 1",
        "SHOW GLOBAL STATUS LIKE 'Threads%'",
        "EXPLAIN SELECT * FROM t",
        "EXPLAIN DELETE FROM t",  # only planned, not run
        "EXPLAIN FORMAT=JSON SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN ANALYZE FORMAT=TREE SELECT 1",
        "DESCRIBE t",
        "desc t",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        (
            "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
            "SELECT i FROM n"
        ),
        "WITH a AS (SELECT 1), b AS (SELECT 2) SELECT * FROM a, b",
        "SELECT 'DELETE FROM t; DROP TABLE t' AS text",
        'SELECT "it\'s; fine", `odd;name` FROM t',
        "SELECT 'it''s' FROM t WHERE note = 'a\\'; DROP TABLE t; --'",
        "SELECT updated_at, deleted FROM t",
        "SELECT * FROM t INTO @x",
    ],
)
def test_read_only_statements_pass(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("DELETE FROM t", "a DELETE statement"),
        ("update t set a = 1", "a UPDATE statement"),
        ("INSERT INTO t VALUES (1)", "a INSERT statement"),
        ("DROP TABLE t", "a DROP statement"),
        ("SET GLOBAL max_connections = 1", "a SET statement"),
        ("CALL proc()", "a CALL statement"),
        ("DO SLEEP(1)", "a DO statement"),
        ("ANALYZE TABLE t", "a ANALYZE statement"),
        ("SELECT 1; DROP TABLE x", "2 statements"),
        ("SELECT 1;DROP TABLE x;", "2 statements"),
        ("SELECT 1; -- comment\n DELETE FROM t", "2 statements"),
        ("/* SELECT */ DELETE FROM t", "a DELETE statement"),
        ("-- SELECT\nDELETE FROM t", "a DELETE statement"),
        ("(DELETE FROM t)", "a DELETE statement"),
        ("/*! DELETE FROM t */ SELECT 1", "executable comments"),
        ("SELECT 1 /*!50000 , (SELECT 1) */", "executable comments"),
        ("WITH x AS (SELECT 1) DELETE FROM t", "a DELETE statement"),
        ("WITH x AS (SELECT 1), y AS (SELECT 2) UPDATE t SET a = 1", "a UPDATE statement"),
        ("EXPLAIN ANALYZE DELETE FROM t", "a DELETE statement"),
        ("EXPLAIN ANALYZE FORMAT=TREE DELETE FROM t", "a DELETE statement"),
        ("WITH x AS (DELETE FROM t RETURNING id) SELECT * FROM x", "a DELETE statement"),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "writes a file"),
        ("SELECT * FROM t INTO DUMPFILE '/tmp/x'", "writes a file"),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", "locking read"),
        ("SELECT * FROM t LOCK IN SHARE MODE", "locking read"),
        ("SELECT * FROM t FOR SHARE", "locking read"),
        ("'SELECT'", "does not start with a keyword"),
    ],
)
def test_statements_that_may_write_are_refused(sql: str, reason: str) -> None:
    with pytest.raises(UnsafeStatement, match=reason):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql, reason",
    [
        ("", "empty"),
        (" ; ", "empty"),
        ("-- only a comment", "empty"),
        ("SELECT 'open", "not closed"),
        ("SELECT 1 /* open", "not closed"),
        ("WITH x AS (SELECT 1 SELECT 1", "not closed"),
    ],
)
def test_unreadable_statements(sql: str, reason: str) -> None:
    with pytest.raises(BadStatement, match=reason):
        check_read_only(sql)


@pytest.mark.parametrize(
    "sql, count, problem",
    [
        ("SELECT 1", 0, None),
        ("SELECT * FROM t WHERE a = %s AND b = %s", 2, None),
        ("SELECT * FROM t WHERE a LIKE 'x%%' AND b = %s", 1, None),
        ("SELECT * FROM t WHERE a LIKE 'x%'", 0, "%'"),
        ("SELECT %d", 0, "%d"),
        ("SELECT 5 %", 0, "%"),
    ],
)
def test_placeholders(sql: str, count: int, problem: str | None) -> None:
    assert placeholders(sql) == (count, problem)


def test_parameter_generators_stay_in_range() -> None:
    rng = random.Random(1)
    ints = [parse_param("int:5:9").draw(rng) for _ in range(500)]
    assert set(ints) == set(range(5, 10))
    floats = [parse_param("float:0.5:1.5").draw(rng) for _ in range(100)]
    assert all(0.5 <= x <= 1.5 for x in floats)
    choices = {parse_param("choice:a,b,42").draw(rng) for _ in range(200)}
    assert choices == {"a", "b", 42}
    words = [parse_param("str:3:6").draw(rng) for _ in range(200)]
    assert {len(w) for w in words} == {3, 4, 5, 6} and all(w.isalnum() for w in words)
    assert len(parse_param("str:8").draw(rng)) == 8


@pytest.mark.parametrize(
    "spec, reason",
    [
        ("int:10:1", "LOW is greater than HIGH"),
        ("int:1", "expected int:LOW:HIGH"),
        ("int:a:b", "must be int numbers"),
        ("float:x:1", "must be float numbers"),
        ("choice:", "expected choice"),
        ("str:-1", "0 <= MIN <= MAX"),
        ("str:x", "whole numbers"),
        ("uuid", "unknown kind 'uuid'"),
    ],
)
def test_bad_parameter_specs(spec: str, reason: str) -> None:
    with pytest.raises(WorkloadError, match=reason):
        parse_param(spec)


def test_params_file_rows(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("1\n2\n\n3\n")
    assert read_params_file(path) == [(1,), (2,), (3,)]
    path.write_text("1\tbob\n2\tann, jr\n")
    assert read_params_file(path) == [(1, "bob"), (2, "ann, jr")]
    path.write_text("1,a\n2\n")
    with pytest.raises(WorkloadError, match="different numbers of values"):
        read_params_file(path)
    path.write_text("\n\n")
    with pytest.raises(WorkloadError, match="no rows"):
        read_params_file(path)
    with pytest.raises(WorkloadError, match="cannot read parameters file"):
        read_params_file(tmp_path / "missing.txt")


def test_placeholders_must_match_the_parameters(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"--sql #1: 1 placeholder \(%s\) but 0 parameters"):
        from_arguments([("SELECT * FROM t WHERE id = %s", [], None)], 0)
    with pytest.raises(WorkloadError, match=r"--sql #2: 0 placeholders \(%s\) but 1 parameter"):
        from_arguments([("SELECT 1", [], None), ("SELECT 2", ["int:1:2"], None)], 0)
    with pytest.raises(WorkloadError, match='"%\'" is not a placeholder'):
        from_arguments([("SELECT * FROM t WHERE a LIKE 'x%' AND id = %s", ["int:1:2"], None)], 0)
    ids = tmp_path / "ids.csv"
    ids.write_text("1,2\n")
    with pytest.raises(WorkloadError, match=r"1 placeholder .* but 2 values per row"):
        from_arguments([("SELECT * FROM t WHERE id = %s", [], str(ids))], 0)
    # A literal % needs no doubling when the statement takes no parameters.
    workload = from_arguments([("SELECT * FROM t WHERE a LIKE 'x%'", [], None)], 0)
    assert workload.statements()[0].arguments(random.Random(1)) is None


def test_workload_file(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("7\n8\n")
    path = tmp_path / "workload.yaml"
    path.write_text("""\
think_ms: 5
statements:
  - sql: SELECT * FROM items WHERE id = %s
    params: ["int:1:100"]
    weight: 8
  - sql: SELECT * FROM items WHERE id = %s
    params_file: ids.txt
  - transaction:
      - SELECT COUNT(*) FROM items
      - sql: SELECT * FROM items WHERE name = %s
        params: ["choice:a,b"]
    weight: 1
""")
    workload = load_workload(path)
    assert workload.think_ms == 5.0
    assert [r.weight for r in workload.requests] == [8.0, 1.0, 1.0]
    assert [r.transaction for r in workload.requests] == [False, False, True]
    assert len(workload.requests[2].statements) == 2
    rng = random.Random(3)
    assert workload.requests[1].statements[0].arguments(rng) in ((7,), (8,))
    picks = [workload.pick(rng) for _ in range(2000)]
    share = picks.count(workload.requests[0]) / len(picks)
    assert 0.75 < share < 0.85
    workload.check_read_only()
    described = workload.describe()
    assert described["requests"][1]["statements"][0]["params"][0].endswith("ids.txt (2 rows)")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("- SELECT 1\n", "expected a mapping with a 'statements:' list"),
        ("statements: []\n", "non-empty list"),
        ("statements:\n  - sql: SELECT 1\n    wieght: 2\n", "unknown key 'wieght'"),
        ("statements:\n  - sql: SELECT 1\n    weight: 0\n", "weight must be a positive number"),
        ("statements:\n  - sql: SELECT %s\n", r"1 placeholder \(%s\) but 0 parameters"),
        ("statements:\n  - transaction: SELECT 1\n", "non-empty list of statements"),
        ("statements:\n  - {}\n", "expected a mapping with 'sql:'"),
        ("think_ms: -1\nstatements:\n  - sql: SELECT 1\n", "think time must be 0 to"),
        ("statement:\n  - sql: SELECT 1\n", "unknown key 'statement'"),
        ("statements: [\n", "not valid YAML at line"),
    ],
)
def test_bad_workload_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "workload.yaml"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=reason):
        load_workload(path)


def test_workload_file_statement_refused_without_allow_writes(tmp_path: Path) -> None:
    path = tmp_path / "workload.yaml"
    path.write_text(
        "statements:\n  - SELECT 1\n  - transaction:\n"
        "      - SELECT 1\n      - UPDATE t SET a = 1\n"
    )
    workload = load_workload(path)
    with pytest.raises(WorkloadError, match=r"refusing statement 3 \(UPDATE t SET a = 1\)"):
        workload.check_read_only()


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["bench", *args])
    return code, capsys.readouterr().err


def test_refusals_happen_before_any_connection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No server behind this config: a refusal must come before any connect attempt.
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  primary:\n    host: 127.0.0.1\n    port: 9\n")
    code, err = _bench(capsys, "--config", str(config), "--sql", "DELETE FROM t", "--yes")
    assert code == 2
    assert "refusing statement 1 (DELETE FROM t)" in err
    assert "--allow-writes" in err
    code, err = _bench(capsys, "--config", str(config), "--yes")
    assert code == 2 and "nothing to run" in err


def test_sqlite_configs_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  primary:\n    driver: sqlite\n    path: x.db\n")
    code, err = _bench(capsys, "--config", str(config), "--sql", "SELECT 1", "--yes")
    assert code == 2
    assert "is a SQLite database" in err


def test_missing_optional_packages_are_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  primary:\n    host: 127.0.0.1\n    port: 9\n")
    monkeypatch.setattr(command, "_installed", lambda name: False)
    code, err = _bench(
        capsys,
        "--config",
        str(config),
        "--sql",
        "SELECT 1",
        "--yes",
        "--plot",
        str(tmp_path / "out.png"),
    )
    assert code == 2
    assert (
        "--plot needs matplotlib, which is not installed: pip install 'dbpool-dbutils[advisor]'"
    ) in err
    code, err = _bench(
        capsys, "--config", str(config), "--sql", "SELECT 1", "--yes", "--compare", "sqlalchemy"
    )
    assert "--compare sqlalchemy needs SQLAlchemy" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--param", "int:1:2", "--sql", "SELECT %s"], "--param must follow the --sql"),
        (["--sql", "SELECT 1", "--threads", "0"], "thread counts must be 1 to"),
        (["--sql", "SELECT 1", "--threads", "a,b"], "expected thread counts like 4,16,64"),
        (["--sql", "SELECT 1", "--duration", "0"], "expected 0 < seconds"),
        (["--sql", "SELECT 1", "--compare", "hikari"], "unknown pool hikari"),
        (
            ["--sql", "SELECT %s", "--params-file", "a", "--params-file", "b"],
            "--sql #1 has two --params-file",
        ),
    ],
)
def test_bad_options(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_default_threads_surround_the_pool_size(tmp_path: Path) -> None:
    from dbpool import load_settings

    config = tmp_path / "config.yaml"
    config.write_text(
        "database:\n  primary:\n    host: h\n    pool:\n      size: 10\n"
        "      max_overflow: 5\n  tiny:\n    host: h\n    pool:\n      size: 1\n"
        "      max_overflow: 0\n"
    )
    assert command.default_threads(load_settings(config=config)) == [5, 15, 30]
    assert command.default_threads(load_settings("tiny", config=config)) == [1, 2]


def test_params_attach_to_the_sql_before_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("database:\n  primary:\n    host: 127.0.0.1\n    port: 9\n")
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n")
    code, err = _bench(
        capsys,
        "--config",
        str(config),
        "--sql",
        "SELECT %s",
        "--params-file",
        str(ids),
        "--sql",
        "SELECT 1",
        "--param",
        "int:1:2",
    )
    assert code == 2
    assert "--sql #2: 0 placeholders (%s) but 1 parameter" in err
    # Well attached, the workload is built and the plan shown; then, with no terminal
    # to ask on and no --yes, it stops before connecting.
    code, err = _bench(
        capsys,
        "--config",
        str(config),
        "--sql",
        "SELECT 1",
        "--sql",
        "SELECT %s, %s",
        "--param",
        "int:1:2",
        "--param",
        "choice:a,b",
        "--sql",
        "SELECT %s",
        "--params-file",
        str(ids),
    )
    assert code == 2
    assert "3 statements (SELECT; read-only)" in err
    assert "refusing to run: no terminal" in err
