#!/usr/bin/env bash
# Installs what the tests and benchmarks need beyond the Rust toolchain: OpenSSL headers,
# socat, Prometheus and chromium (Debian packages, when missing), the Python packages in
# requirements-dev.txt (scikit-learn for parity tests, shap for the explanation parity test,
# deltalake to read back the Delta tables, check-jsonschema for the compose file, kafka-python
# as an independent Kafka client, moto's S3-compatible server for the Delta-on-S3 test,
# azure-storage-blob to create the Azurite container, playwright to drive chromium), Azurite (npm; Azure Blob Storage's emulator, for the Delta-on-Azure
# test) and the tansu Kafka broker. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: OpenSSL headers for librdkafka's TLS/SASL and the Postgres sink's TLS (the
# rdkafka `ssl` feature and postgres-openssl link the system OpenSSL), socat and the openssl
# command for the Kafka-over-TLS test, Prometheus (with promtool) for the monitoring tests.
need=()
pkg-config --exists openssl 2>/dev/null || need+=(pkg-config libssl-dev)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Prometheus and promtool for the monitoring tests (dashboards/prometheus/).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Chromium (headless, driven by Playwright for Python) for the console's browser test.
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}: install them (e.g. sudo apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
fi

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
        want[name.split("[")[0]] = ver
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

# Azure Blob Storage's emulator for the Delta-on-Azure test: Azurite from the npm registry,
# into ~/.cache/txguard/azurite (needs Node.js and npm; ~15 s).
AZURITE_ROOT="$HOME/.cache/txguard/azurite"
AZURITE_VERSION=3.35.0
if [ -z "${TXGUARD_AZURITE:-}" ] && ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_ROOT/node_modules/azurite/package.json"; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found; install Node.js and npm (Azurite for the Delta-on-Azure test)" >&2; exit 1; }
  echo "setup: installing Azurite $AZURITE_VERSION (npm)" >&2
  mkdir -p "$AZURITE_ROOT"
  npm install --prefix "$AZURITE_ROOT" --silent --no-audit --no-fund "azurite@$AZURITE_VERSION" >/dev/null
fi

# The Grafana dashboard's type check (@grafana/schema + TypeScript, pinned in
# dashboards/grafana/check/package-lock.json; no Grafana server installs here).
GRAFANA_CHECK=dashboards/grafana/check
if ! cmp -s "$GRAFANA_CHECK/package-lock.json" "$GRAFANA_CHECK/node_modules/.installed-lock.json" 2>/dev/null; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm not found; install Node.js and npm (the Grafana dashboard check)" >&2; exit 1; }
  echo "setup: installing the Grafana dashboard check's packages (npm ci)" >&2
  (cd "$GRAFANA_CHECK" && npm ci --silent --no-audit --no-fund >/dev/null \
    && cp package-lock.json node_modules/.installed-lock.json)
fi

# cargo-deny for the offline license and duplicate-dependency checks (deny.toml), built once
# per machine into ~/.cache/txguard/cargo-deny (~5 min on 2 cores).
DENY_ROOT="${TXGUARD_DENY_ROOT:-$HOME/.cache/txguard/cargo-deny}"
DENY_VERSION=0.18.9
if ! "$DENY_ROOT/bin/cargo-deny" --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  echo "setup: building cargo-deny $DENY_VERSION (once per machine, ~5 min)" >&2
  CARGO_TARGET_DIR="$HOME/.cache/txguard/deny-target" \
    cargo install --quiet --locked --root "$DENY_ROOT" cargo-deny --version "$DENY_VERSION"
fi

# An MLflow tracking server for the model-registry test (tests/mlflow.rs): mlflow with its
# server's dependencies, in a virtualenv of its own (~/.cache/txguard/mlflow-venv, ~850 MB,
# ~2 min) so its pins never meet requirements-dev.txt's.
MLFLOW_VERSION=3.17.2
MLFLOW_VENV="${TXGUARD_MLFLOW_VENV:-$HOME/.cache/txguard/mlflow-venv}"
if ! "$MLFLOW_VENV/bin/mlflow" --version 2>/dev/null | grep -q "$MLFLOW_VERSION"; then
  echo "setup: installing MLflow $MLFLOW_VERSION into $MLFLOW_VENV (the registry test's server)" >&2
  "$PY" -m venv "$MLFLOW_VENV"
  "$MLFLOW_VENV/bin/pip" install --quiet --disable-pip-version-check --root-user-action=ignore "mlflow==$MLFLOW_VERSION"
fi
