#!/usr/bin/env bash
# Starts the app on the embedded defaults (SQLite in data/, files in data/media, offline providers).
# app.py serves the pages of Home.py and the gallery's download links.
# Creates the virtual environment on first use. Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.app-requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
exec .venv/bin/streamlit run app.py "$@"
