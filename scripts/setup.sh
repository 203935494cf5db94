#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain: the Python packages
# in requirements-dev.txt (scikit-learn for parity tests, deltalake to read back the Delta tables). Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${TXGUARD_PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: $PY not found; install Python 3.11+ or set TXGUARD_PYTHON" >&2
  exit 1
fi
if ! "$PY" - <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
want = {}
for line in open("requirements-dev.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, ver = line.split("==")
        want[name] = ver
sys.exit(0 if all(m.version(k) == v for k, v in want.items()) else 1)
PYEOF
then
  echo "setup: installing Python packages from requirements-dev.txt" >&2
  "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r requirements-dev.txt
fi
