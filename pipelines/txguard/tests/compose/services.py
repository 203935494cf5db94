"""Validates docker-compose.yml against the Compose Specification's JSON schema (vendored by
check-jsonschema) and prints each service's image, command and environment as JSON, with
YAML anchors and merge keys resolved, for tests/compose.rs to check the txguard commands."""

import json
import subprocess
import sys

from ruamel.yaml import YAML


def main(path):
    check = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        sys.stderr.write(check.stdout + check.stderr)
        sys.exit(1)
    with open(path) as f:
        doc = YAML(typ="safe").load(f)
    out = {}
    for name, svc in doc["services"].items():
        out[name] = {
            "image": svc.get("image"),
            "build": svc.get("build"),
            "command": svc.get("command"),
            "environment": svc.get("environment") or {},
            "depends_on": sorted((svc.get("depends_on") or {}).keys()),
            "healthcheck": "healthcheck" in svc,
            "profiles": svc.get("profiles") or [],
            "volumes": svc.get("volumes") or [],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
