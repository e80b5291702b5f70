"""The mode advisor behind ``dbpool bench``: your statements, your server, both modes.

- ``workload.py``: the statements, their parameter generators, the YAML file;
- ``sqlcheck.py``: which statements count as read-only, and their placeholders;
- ``runner.py``: the pools measured and one measured cell;
- ``sampler.py``: the server's connection count, from a separate process;
- ``advice.py``: the figures over rounds and the recommendation (pure functions);
- ``report.py``: the table, the paragraph and the plot;
- ``command.py``: the command line.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``commands`` (an argparse subparsers object)."""
    # Imported here: `python -m dbpool.advisor.sampler` runs this package's __init__ first.
    from .command import add_parser as add

    return add(commands)
