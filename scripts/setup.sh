#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain: the Python packages
# in requirements-dev.txt (scikit-learn for parity tests, deltalake to read back the Delta
# tables, check-jsonschema for the compose file, kafka-python as an independent Kafka client)
# and the tansu Kafka broker. Idempotent and quiet when done.
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

# A Kafka-protocol broker for the Kafka tests: tansu 0.6 (Apache Kafka-compatible, in-memory
# storage), built once per machine into ~/.cache/txguard/tansu (~25 min on 2 cores; its
# build directory is kept so an interrupted build resumes).
TANSU_ROOT="${TXGUARD_TANSU_ROOT:-$HOME/.cache/txguard/tansu}"
if [ -z "${TXGUARD_TANSU:-}" ] && [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  echo "setup: building the tansu Kafka broker for the tests (once per machine, ~25 min)" >&2
  CARGO_TARGET_DIR="$HOME/.cache/txguard/tansu-target" \
    cargo install --quiet --locked --root "$TANSU_ROOT" tansu --version 0.6.0 --features dynostore
fi
