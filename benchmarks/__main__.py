"""Entry point of ``python -m benchmarks``."""

from .cli import main

raise SystemExit(main())
