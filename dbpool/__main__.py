"""Run the dbpool command line."""

import sys

from .cli import main

sys.exit(main())
