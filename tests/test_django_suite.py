"""Django's own tests (the CI subset) on Django's MySQL backend and on dbpool.contrib.django.

tools/django_suite.py runs them; the whole selection runs on demand with
``bash tools/django_suite.sh``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.mariadb import ENV_EXTERNAL, MariaDBNotInstalled, find_binaries  # noqa: E402


@pytest.mark.django_suite
@pytest.mark.mysql
def test_fast_subset_passes_on_dbpool_wherever_it_passes_on_stock(tmp_path: Path) -> None:
    if not os.environ.get(ENV_EXTERNAL):
        try:
            find_binaries()
        except MariaDBNotInstalled as exc:
            if os.environ.get("DBPOOL_SKIP_MYSQL") == "1":
                pytest.skip(f"DBPOOL_SKIP_MYSQL=1 and {exc}")
            raise
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "django_suite.py"),
            "--fast",
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    print(proc.stdout)
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    assert proc.returncode == 0 and report is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["apps"] == ["basic", "transactions", "transaction_hooks"]
    assert not report["incomplete"]
    assert report["regressions"] == []
    stock, pooled = report["counts"]["stock"], report["counts"]["dbpool"]
    assert stock["tests"] == pooled["tests"] > 150
    assert pooled["pass"] >= stock["pass"] > 150
