"""What the benchmark ran on: machine, kernel, Python, package versions, git commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "DBUtils",
    "PyMySQL",
    "mysql-connector-python",
    "SQLAlchemy",
    "pymysql-pool",
    "numpy",
    "matplotlib",
    "tqdm",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "dbpool"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    return commit + (" (dbpool/ modified)" if dirty.stdout.strip() else "")


def describe(server_version: str) -> dict[str, Any]:
    import dbpool

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    root = Path(__file__).resolve().parent.parent
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "dbpool": f"{dbpool.__version__} (git {_git_commit(root) or 'unknown'})",
        "packages": versions,
        "server": server_version,
        "load_average_start": list(load) if load else None,
    }


def _task_ids(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


class Pinning:
    """The server on one core, the benchmark on another, when there are two or more.

    Each side then has a core of its own: the client's Python threads no longer
    compete with the server's for one core, which is what made the figures jump
    from round to round. Only a server the benchmark started itself is pinned
    (every thread it has now; the ones it starts later inherit the mask). The
    client's mask is set on the calling (main) thread before any worker starts,
    so every thread of the run inherits it, and ``restore()`` puts it back.
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.client_cpus: list[int] | None = None
        self.server_cpus: list[int] | None = None
        self.note = ""
        self._saved: set[int] | None = None
        self._server_saved: dict[int, set[int]] = {}

    def apply(self) -> Pinning:
        if not hasattr(os, "sched_setaffinity"):
            self.note = "not pinned: this system has no sched_setaffinity"
            return self
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            self.note = "not pinned: only one core available"
            return self
        if self.server_pid is None:
            self.note = "not pinned: the server was not started by the benchmark"
            return self
        server, client = {cpus[0]}, {cpus[1]}
        for tid in _task_ids(self.server_pid):
            with contextlib.suppress(OSError):
                self._server_saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, server)
        self._saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, client)
        self.server_cpus, self.client_cpus = sorted(server), sorted(client)
        self.note = (
            f"server (mariadbd, every thread) pinned to core {cpus[0]}, "
            f"the benchmark process to core {cpus[1]}"
        )
        return self

    def restore(self) -> None:
        if self._saved is not None:
            os.sched_setaffinity(0, self._saved)
            self._saved = None
        for tid, mask in self._server_saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)
        self._server_saved = {}

    def describe(self) -> dict[str, Any]:
        return {"client_cpus": self.client_cpus, "server_cpus": self.server_cpus, "note": self.note}
