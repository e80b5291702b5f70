"""Run part of Django's own test suite on Django's MySQL backend and on dbpool's, and compare.

    python tools/django_suite.py                  # the full selection (see APPS)
    python tools/django_suite.py basic transactions transaction_hooks
    python tools/django_suite.py --json out.json --backend dbpool

Downloads the source distribution of the installed Django version (it ships
``tests/runtests.py``) into a cache directory, starts a throwaway MariaDB
server (tests/mariadb.py; ``DBPOOL_TEST_MYSQL`` names an existing one, whose
user must be allowed to create databases), writes one settings module per
backend and runs ``runtests.py --parallel=1`` on each. Both backends use the
same driver stack: PyMySQL installed as ``MySQLdb``. It prints the counts per
backend and every test whose outcome differs, and exits 1 if a test that passes
on the stock backend does not pass on dbpool's (or a run did not complete).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APPS = ["backends", "basic", "transactions", "transaction_hooks", "select_for_update",
        "queries", "model_fields", "timezones"]
FAST_APPS = ["basic", "transactions", "transaction_hooks"]
BACKENDS = {"stock": "django.db.backends.mysql", "dbpool": "dbpool.contrib.django"}
PASSING = {"pass", "skip", "xfail"}
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dbpool"

RUNNER = '''\
"""A DiscoverRunner that also writes every test's outcome to $DBPOOL_SUITE_RESULTS."""
import json
import os
import unittest

from django.test.runner import DiscoverRunner


class RecordingResult(unittest.TextTestResult):
    outcomes = {}

    def _record(self, test, outcome):
        key = test.id()
        if outcome in ("fail", "error") or key not in self.outcomes:
            self.outcomes[key] = outcome

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail")

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "fail" if failed else "error")


class RecordingRunner(DiscoverRunner):
    def get_resultclass(self):
        return RecordingResult

    def run_suite(self, suite, **kwargs):
        result = super().run_suite(suite, **kwargs)
        with open(os.environ["DBPOOL_SUITE_RESULTS"], "w") as f:
            json.dump(RecordingResult.outcomes, f, indent=0, sort_keys=True)
        return result
'''

SETTINGS = '''\
import pymysql

pymysql.install_as_MySQLdb()

_SERVER = {server!r}
_ENGINE = {engine!r}
_OPTIONS = {options!r}

DATABASES = {{
    alias: {{
        "ENGINE": _ENGINE,
        "HOST": _SERVER["host"],
        "PORT": _SERVER["port"],
        "USER": _SERVER["user"],
        "PASSWORD": _SERVER["password"],
        "NAME": f"djsuite_{{alias}}",
        "OPTIONS": dict(_OPTIONS),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {{"NAME": f"test_djsuite_{name}_{{alias}}", "CHARSET": "utf8mb4"}},
    }}
    for alias in ("default", "other")
}}
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "suite_runner.RecordingRunner"
'''


def django_sources(version: str, cache: Path) -> Path:
    """The unpacked sdist of Django ``version`` (downloaded on first use)."""
    target = cache / f"django-{version}"
    if (target / "tests" / "runtests.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"django-{version}.tar.gz"
    if not archive.is_file():
        print(f"downloading the Django {version} source distribution", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"django=={version}", "-d", str(cache)],
            check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    with tempfile.TemporaryDirectory(dir=cache) as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        Path(tmp, f"django-{version}").rename(target)
    return target


def start_server() -> tuple[Any, dict[str, Any]]:
    """A MariaDB server and the credentials of a user allowed to create test databases."""
    from tests.mariadb import MariaDBServer

    server = MariaDBServer()
    server.start()
    if server.external:
        return server, server.params()
    params = {**server.params(), "user": "djsuite", "password": secrets.token_hex(12)}
    conn = server.admin_connect()
    try:
        with conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute(f"CREATE USER 'djsuite'@'{host}' IDENTIFIED BY %s",
                            (params["password"],))
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'djsuite'@'{host}'")
    finally:
        conn.close()
    return server, params


def run_backend(name: str, sources: Path, server: dict[str, Any], apps: list[str],
                workdir: Path, verbosity: int) -> dict[str, str] | None:
    """Run the selection on one backend; the outcome of each test (None if no result)."""
    settings_dir = workdir / name
    settings_dir.mkdir()
    options: dict[str, Any] = {"pool": {"size": 4, "max_overflow": 4}} if name == "dbpool" else {}
    (settings_dir / f"settings_{name}.py").write_text(SETTINGS.format(
        server={k: server[k] for k in ("host", "port", "user", "password")},
        engine=BACKENDS[name], options=options, name=name))
    (settings_dir / "suite_runner.py").write_text(RUNNER)
    results = workdir / f"{name}.json"
    log = workdir / f"{name}.log"
    env = {**os.environ, "DBPOOL_SUITE_RESULTS": str(results),
           "PYTHONPATH": os.pathsep.join([str(settings_dir), str(ROOT), str(sources)]),
           "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "runtests.py", f"--settings=settings_{name}", "--parallel=1",
               "--noinput", f"--verbosity={verbosity}", *apps]
    print(f"[{name}] {' '.join(command[1:])}  (log: {log})", flush=True)
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(command, cwd=sources / "tests", env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    print(f"[{name}] exit {proc.returncode} after {time.monotonic() - start:.0f}s", flush=True)
    if not results.is_file():
        print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        return None
    outcomes: dict[str, str] = json.loads(results.read_text())
    return outcomes


def counts(outcomes: dict[str, str]) -> dict[str, int]:
    total = {"tests": len(outcomes)}
    for outcome in ("pass", "fail", "error", "skip", "xfail", "xpass"):
        total[outcome] = sum(1 for value in outcomes.values() if value == outcome)
    return total


def compare(runs: dict[str, dict[str, str]]) -> dict[str, Any]:
    stock, pooled = runs.get("stock", {}), runs.get("dbpool", {})
    differing = {
        test: {"stock": stock.get(test, "missing"), "dbpool": pooled.get(test, "missing")}
        for test in sorted(set(stock) | set(pooled))
        if stock.get(test) != pooled.get(test)
    }
    regressions = sorted(
        test for test, pair in differing.items()
        if pair["stock"] in PASSING and pair["dbpool"] not in PASSING)
    return {"counts": {name: counts(outcomes) for name, outcomes in runs.items()},
            "differing": differing, "regressions": regressions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("apps", nargs="*", help=f"Django test labels (default: {' '.join(APPS)})")
    parser.add_argument("--fast", action="store_true",
                        help=f"the subset run in CI: {' '.join(FAST_APPS)}")
    parser.add_argument("--backend", choices=["both", *BACKENDS], default="both")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the Django sources are kept (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the comparison to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs and settings")
    parser.add_argument("-v", "--verbosity", type=int, default=1)
    args = parser.parse_args(argv)
    apps = args.apps or (FAST_APPS if args.fast else APPS)

    import django

    sources = django_sources(django.__version__, args.cache)
    workdir = Path(tempfile.mkdtemp(prefix="dbpool-django-suite-"))
    names = list(BACKENDS) if args.backend == "both" else [args.backend]
    server, params = start_server()
    runs: dict[str, dict[str, str]] = {}
    incomplete = []
    try:
        for name in names:
            outcomes = run_backend(name, sources, params, apps, workdir, args.verbosity)
            if outcomes is None:
                incomplete.append(name)
            else:
                runs[name] = outcomes
    finally:
        server.stop()

    report = compare(runs)
    report.update(django=django.__version__, apps=apps, incomplete=incomplete)
    print(f"\nDjango {django.__version__}, apps: {' '.join(apps)}")
    for name, total in report["counts"].items():
        print(f"  {name:7} " + ", ".join(f"{key} {value}" for key, value in total.items()))
    for name in incomplete:
        print(f"  {name:7} did not complete (see {workdir / (name + '.log')})")
    if report["differing"]:
        print("tests whose outcome differs (stock -> dbpool):")
        for test, pair in report["differing"].items():
            print(f"  {pair['stock']:>7} -> {pair['dbpool']:7} {test}")
    else:
        print("no test differs")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    failed = bool(report["regressions"] or incomplete)
    if failed:
        print(f"FAILED: {len(report['regressions'])} test(s) pass on stock and not on dbpool; "
              f"logs in {workdir}")
    elif not args.keep:
        for path in sorted(workdir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        workdir.rmdir()
    else:
        print(f"logs in {workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
