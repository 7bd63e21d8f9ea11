#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing (Debian postgresql + chromium, the venv and
# Python packages), starts a throwaway PostgreSQL cluster, runs ruff, mypy and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. System packages (only when absent).
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Virtual environment and Python packages (re-installed when the requirement files change).
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi

# 3. A throwaway PostgreSQL cluster, removed on exit.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGROOT=$(mktemp -d /tmp/adg-pg.XXXXXX)
chmod 755 "$PGROOT"
PGPORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then
  chown postgres "$PGROOT"
  PGRUN=(runuser -u postgres --)
else
  PGRUN=()
fi
"${PGRUN[@]}" "$PGBIN/initdb" -D "$PGROOT/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
PGCTL=("${PGRUN[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w -o "-p $PGPORT -k $PGROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
"${PGCTL[@]}" start >/dev/null
cleanup() { "${PGCTL[@]}" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGROOT"; }
trap cleanup EXIT
export TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$PGPORT/postgres"
export TEST_PG_CTL="$(printf '%q ' "${PGCTL[@]}")"
export REQUIRE_POSTGRES=1
export REQUIRE_CHROMIUM=1

# 4. Lint, types, tests.
.venv/bin/ruff check pipeline db pages tests Home.py
.venv/bin/mypy pipeline db
.venv/bin/python -m pytest "$@"
