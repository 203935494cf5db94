"""What an MLflow server holds of a registered model, read with MLflow's own Python client
(an independent reader of what `txguard train --register` wrote through the REST API).

Run with the MLflow virtualenv's python (scripts/setup.sh). Prints JSON: the version the alias
points at, its run's params, metrics and tags, the run's artifact paths, and the downloaded
model file's text.

usage: registry.py TRACKING_URI MODEL_NAME ALIAS
"""

import json
import sys
import tempfile

from mlflow import MlflowClient

uri, name, alias = sys.argv[1:4]
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
mv = client.get_model_version_by_alias(name, alias)
run = client.get_run(mv.run_id)
arts = sorted(a.path for a in client.list_artifacts(mv.run_id))
arts += sorted(a.path for a in client.list_artifacts(mv.run_id, "model"))
with tempfile.TemporaryDirectory() as d:
    path = client.download_artifacts(mv.run_id, "model/model.json", d)
    with open(path) as f:
        model = f.read()
evaluation = sorted(a.path for a in client.list_artifacts(mv.run_id, "evaluation"))
print(json.dumps({
    "evaluation": evaluation,
    "version": mv.version,
    "source": mv.source,
    "status": run.info.status,
    "experiment": client.get_experiment(run.info.experiment_id).name,
    "params": run.data.params,
    "metrics": run.data.metrics,
    "tags": {k: v for k, v in run.data.tags.items() if k.startswith("txguard.")},
    "artifacts": arts,
    "model": model,
}))
