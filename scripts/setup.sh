#!/usr/bin/env bash
# Create .venv and install lusbench with its test tools and its optional extras (DICOM, dask), so that CI tests
# them too; a no-op when nothing changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.lusbench-install-stamp
want=$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing lusbench and its dependencies into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e '.[dev,dicom,dask]'
  echo "$want" > "$stamp"
fi
