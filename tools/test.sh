#!/usr/bin/env bash
# Run dbpool's whole test suite, on a bare Debian machine too:
#
#   bash tools/test.sh [pytest args...]
#
# 1. installs MariaDB (apt-get install mariadb-server) if mariadbd is missing,
#    unless DBPOOL_TEST_MYSQL names an existing server or DBPOOL_SKIP_MYSQL=1,
#    galera-4, rsync and haproxy for the cluster tier if they are missing,
#    unless DBPOOL_SKIP_CLUSTER=1 (or DBPOOL_SKIP_MYSQL=1), and tmux (for the
#    test of `dbpool top` in a real terminal) if it is missing;
# 2. creates or reuses the virtualenv .venv and installs dbpool into it with
#    its test extras (skipped when setup.cfg and pyproject.toml are unchanged);
# 3. runs ruff (lint and format), mypy and pytest (by default the full default suite: the fast,
#    mysql and faults tiers; slow tests need --run-slow);
# 4. without pytest args, runs the fast tier and the MySQL pool tests again in
#    a second virtualenv, .venv-oldest, on the oldest DBUtils, PyMySQL,
#    mysql-connector-python and PyYAML that setup.cfg allows (tools/oldest.txt);
#    .venv has the newest. DBPOOL_SKIP_OLDEST=1 leaves this step out.
#
# Installing system packages needs root, or sudo. Any failing step fails the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
OLDEST_VENV=.venv-oldest
OLDEST_PINS=tools/oldest.txt
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

step() { printf '\n==> %s (at %ds)\n' "$*" "$SECONDS"; }
die() { printf 'tools/test.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -q -y --no-install-recommends "$@"
}

find_sbin() {  # find_sbin NAME...: succeed if any NAME is on PATH or in an sbin dir
    local name dir
    for name in "$@"; do
        command -v "$name" >/dev/null 2>&1 && return 0
        for dir in /usr/sbin /usr/local/sbin /sbin; do
            [ -x "$dir/$name" ] && return 0
        done
    done
    return 1
}

# -- 1. MariaDB, Galera, HAProxy, tmux --------------------------------------------
# The cluster tier (tests/fix_cluster.py) starts a Galera cluster (galera-4, with
# rsync for its state transfers) and HAProxy in front of it.
packages=()
want() {  # want PACKAGE: add it to the install list once
    local p
    for p in "${packages[@]}"; do [ "$p" = "$1" ] && return 0; done
    packages+=("$1")
}
if [ -z "${DBPOOL_TEST_MYSQL:-}" ] && [ "${DBPOOL_SKIP_MYSQL:-}" != 1 ] \
    && ! { find_sbin mariadbd mysqld && find_sbin mariadb-install-db mysql_install_db; }; then
    want mariadb-server
fi
if [ "${DBPOOL_SKIP_MYSQL:-}" != 1 ] && [ "${DBPOOL_SKIP_CLUSTER:-}" != 1 ]; then
    find_sbin mariadbd mysqld || want mariadb-server
    [ -e /usr/lib/galera/libgalera_smm.so ] || [ -e /usr/lib/libgalera_smm.so ] \
        || want galera-4
    command -v rsync >/dev/null 2>&1 || want rsync
    find_sbin haproxy || want haproxy
fi
# The test of `dbpool top` runs it in a real terminal.
command -v tmux >/dev/null 2>&1 || want tmux
if [ "${#packages[@]}" -gt 0 ]; then
    step "installing ${packages[*]}"
    # The tests start servers of their own: keep the packages from starting any.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d \
            && chmod 755 /usr/sbin/policy-rc.d'
        made_policy=1
    fi
    status=0
    apt_install "${packages[@]}" || status=$?
    if [ "$made_policy" -eq 1 ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    [ "$status" -eq 0 ] || die "installing ${packages[*]} failed"
    if [ -z "${DBPOOL_TEST_MYSQL:-}" ] && [ "${DBPOOL_SKIP_MYSQL:-}" != 1 ]; then
        find_sbin mariadbd mysqld || die "mariadb-server is installed but mariadbd is not found"
    fi
fi

# -- 2. virtualenv ---------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"

make_venv() {  # make_venv DIR: create DIR as a virtualenv unless it has a working pip
    local dir=$1
    if ! { [ -x "$dir/bin/python" ] && "$dir/bin/python" -m pip --version >/dev/null 2>&1; }; then
        step "creating virtualenv $dir"
        rm -rf "$dir"
        if ! "$PYTHON" -m venv "$dir"; then
            # Debian's python3 has venv's ensurepip in a package of its own.
            rm -rf "$dir"
            apt_install python3-venv
            "$PYTHON" -m venv "$dir"
        fi
    fi
}

install_dbpool() {  # install_dbpool DIR [pip args]: pip install -e '.[test]' unless current
    local dir=$1 stamp=$1/.dbpool-install-stamp want
    shift
    want=$(cat setup.cfg pyproject.toml "$@" <("$dir/bin/python" --version) | sha256sum)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
        || ! "$dir/bin/python" -I -c 'import importlib.metadata as m; m.version("dbpool-dbutils")' \
            >/dev/null 2>&1; then
        step "pip install -e '.[test]' into $dir${*:+ ($*)}"
        rm -f "$stamp"
        "$dir/bin/python" -m pip install -q -e '.[test]' "${@/#/--constraint=}"
        printf '%s\n' "$want" > "$stamp"
    fi
}

make_venv "$VENV"
install_dbpool "$VENV"

# DBPOOL_INSTALL_ONLY=1: stop here (tools/django_suite.sh uses it).
[ "${DBPOOL_INSTALL_ONLY:-}" = 1 ] && exit 0

# -- 3. checks -------------------------------------------------------------------
lint_dirs=()
for dir in dbpool tests benchmarks examples; do
    [ -d "$dir" ] && lint_dirs+=("$dir")
done
step "ruff check ${lint_dirs[*]}"
"$VENV/bin/ruff" check "${lint_dirs[@]}"

step "ruff format --check ${lint_dirs[*]}"
"$VENV/bin/ruff" format --check "${lint_dirs[@]}"

step "mypy"
"$VENV/bin/mypy"

step "pytest $*"
"$VENV/bin/python" -m pytest "$@"

# -- 4. the oldest supported versions ------------------------------------------
if [ "$#" -eq 0 ] && [ "${DBPOOL_SKIP_OLDEST:-}" != 1 ]; then
    make_venv "$OLDEST_VENV"
    install_dbpool "$OLDEST_VENV" "$OLDEST_PINS"
    "$OLDEST_VENV/bin/python" - "$OLDEST_PINS" <<'PY'
import importlib.metadata as metadata
import sys

pins = [line.split("#")[0].strip() for line in open(sys.argv[1], encoding="utf-8")]
wrong = []
for name, _, version in (pin.partition("==") for pin in pins if pin):
    if metadata.version(name) != version:
        wrong.append(f"{name} {metadata.version(name)} (pinned {version})")
print("oldest versions:", ", ".join(p for p in pins if p))
sys.exit(f"not the pinned versions: {', '.join(wrong)}" if wrong else 0)
PY
    # The exhaustive line-by-line interrupt cases ran above: they use the fake driver
    # and DBUtils, whose oldest allowed release is also its newest.
    step "pytest on the oldest versions: the fast tier"
    "$OLDEST_VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not mysql and not exhaustive"
    step "pytest on the oldest versions: the MySQL pool tests"
    "$OLDEST_VENV/bin/python" -m pytest -q -p no:cacheprovider \
        tests/test_pool_contract.py tests/test_pool_mysql.py
fi
