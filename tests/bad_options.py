"""Bad pool options and the words of their error, one table for every entry point.

test_config.py runs it through ``validate_pool_options``; test_bad_input.py
through the ``ConnectionPool`` constructor and through a config file's ``pool:``
mapping. Each message is a regular expression, found in the error's text.
"""

from __future__ import annotations

import math
from typing import Any

# (pool options, the message)
BAD_POOL_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"size": "ten"}, r"size must be an integer \(got 'ten'\)"),
    ({"size": 2.0}, r"size must be an integer \(got 2\.0\)"),
    ({"size": 2.5}, r"size must be an integer \(got 2\.5\)"),
    ({"size": True}, r"size must be an integer \(got True\)"),
    ({"size": -3}, r"size cannot be negative \(got -3\)"),
    ({"size": 0, "max_overflow": 0}, r"size \+ max_overflow must be at least 1"),
    ({"max_overflow": -1}, r"max_overflow cannot be negative \(got -1\)"),
    ({"max_overflow": "5"}, r"max_overflow must be an integer \(got '5'\)"),
    ({"timeout": "30"}, r"timeout must be a number of seconds \(got '30'\)"),
    ({"timeout": False}, r"timeout must be a number of seconds \(got False\)"),
    ({"timeout": -0.5}, r"timeout cannot be negative \(got -0\.5\)"),
    ({"timeout": math.inf}, r"timeout must be a finite number of seconds \(got inf\)"),
    ({"timeout": math.nan}, r"timeout must be a finite number of seconds \(got nan\)"),
    ({"recycle": -1}, r"recycle cannot be negative \(got -1\)"),
    ({"recycle": None}, r"recycle must be a number of seconds \(got None\)"),
    ({"recycle": [1]}, r"recycle must be a number of seconds"),
    ({"ping_interval": -1.0}, r"ping_interval cannot be negative"),
    ({"ping_timeout": 0}, r"ping_timeout must be positive"),
    ({"ping_timeout": -2}, r"ping_timeout cannot be negative"),
    ({"pre_ping": "yes"}, r"pre_ping must be true or false \(got 'yes'\)"),
    ({"pre_ping": 1}, r"pre_ping must be true or false \(got 1\)"),
    ({"mode": "pooled"}, r"mode must be one of 'shared', 'persistent' \(got 'pooled'\)"),
    ({"reset": "commit"}, r"reset must be one of 'rollback', 'session' \(got 'commit'\)"),
    ({"leak_threshold": 0}, r"leak_threshold must be positive"),
    ({"leak_threshold": -2}, r"leak_threshold cannot be negative \(got -2\)"),
    ({"leak_threshold": "5"}, r"leak_threshold must be a number of seconds"),
]

IDS = [",".join(f"{k}={v!r}" for k, v in options.items()) for options, _ in BAD_POOL_OPTIONS]

# As arguments of the constructors, None means "not given": those rows do not apply.
AS_ARGUMENTS = [
    (options, message) for options, message in BAD_POOL_OPTIONS if None not in options.values()
]
AS_ARGUMENTS_IDS = [
    ident
    for ident, (options, _) in zip(IDS, BAD_POOL_OPTIONS, strict=True)
    if None not in options.values()
]
