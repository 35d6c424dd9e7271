"""Create the MLflow account the pipeline logs as, or reset its password: run once per `up` by
the compose stack's `mlflow-init` (and by the team-stack test), with the admin's credentials.

The pipeline does not log as the admin. With `default_permission = READ` (basic_auth.ini) its
own account can still create the experiments and registered models it writes to, and MLflow
makes the creator of each their manager; team members read them, and only the pipeline, the
owners they grant and the admins can move a model's `champion`.

Standard library only, so it runs in the MLflow server image as it is. Reads
MLFLOW_TRACKING_URI, MLFLOW_ADMIN_USERNAME, MLFLOW_ADMIN_PASSWORD, MLFLOW_PIPELINE_USERNAME and
MLFLOW_PIPELINE_PASSWORD.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request


def _call(method: str, url: str, body: dict[str, str], auth: tuple[str, str]) -> None:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def main() -> int:
    api = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/users"
    admin = (os.environ["MLFLOW_ADMIN_USERNAME"], os.environ["MLFLOW_ADMIN_PASSWORD"])
    username, password = (
        os.environ["MLFLOW_PIPELINE_USERNAME"],
        os.environ["MLFLOW_PIPELINE_PASSWORD"],
    )
    if username == admin[0]:
        print("MLFLOW_PIPELINE_USERNAME must differ from the admin's", file=sys.stderr)
        return 2
    account = {"username": username, "password": password}
    try:
        _call("POST", f"{api}/create", account, admin)
        print(f"created MLflow user {username}")
    except urllib.error.HTTPError as error:
        if "RESOURCE_ALREADY_EXISTS" not in error.read().decode(errors="replace"):
            raise
        _call("PATCH", f"{api}/update-password", account, admin)
        print(f"MLflow user {username} exists: password set from the environment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
