#!/usr/bin/env bash
# Django's own test suite on Django's MySQL backend and on dbpool.contrib.django:
#
#   bash tools/django_suite.sh            # the full selection (about 15 minutes on 2 cores)
#   bash tools/django_suite.sh --fast     # the subset CI runs
#   bash tools/django_suite.sh queries    # any Django test labels
#
# Installs what is missing the way tools/test.sh does (MariaDB, .venv with the
# test extra, which includes Django), then runs tools/django_suite.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DBPOOL_INSTALL_ONLY=1 bash tools/test.sh
exec .venv/bin/python tools/django_suite.py "$@"
