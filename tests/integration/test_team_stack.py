"""The team stack's servers, configured as infra/ configures them, on a scratch PostgreSQL.

MLflow runs the basic-auth app with infra/mlflow/basic_auth.ini and proxied artifacts; Prefect
runs with API basic auth; the databases come from infra/postgres/init-databases.sh. Needs
PostgreSQL's server binaries (Debian: `apt-get install -y postgresql`): skipped without them.

`team_stack` is module-scoped and yields the URIs and credentials; the last test runs the tiny
pipeline against it (`stack.client_env` in its environment) and finds the pipeline's runs, its
registered model and its flow runs in PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from transformer_pl.stages import STAGES

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is in requirements.lock")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PYTHON = sys.executable
STARTUP_TIMEOUT_S = 180


def _postgres_bindir() -> Path | None:
    """The newest server install (Debian keeps each major under /usr/lib/postgresql/N/bin)."""
    installs = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    if installs:
        return max(installs, key=lambda bindir: int(re.sub(r"\D", "", bindir.parent.name) or 0))
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    """A throwaway cluster on 127.0.0.1 with password (SCRAM) authentication only."""

    bindir: Path
    base: Path
    port: int = field(default_factory=_free_port)
    superuser: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _as_owner(self, *argv: str | Path) -> list[str]:
        # initdb and postgres refuse to run as root: run them as the owner of `base`.
        command = [str(arg) for arg in argv]
        if os.geteuid() == 0:
            owner = pwd.getpwuid(self.base.stat().st_uid).pw_name
            command = ["runuser", "-u", owner, "--", *command]
        return command

    def start(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, self.base.stat().st_uid, -1)
        _run(
            self._as_owner(
                self.bindir / "initdb",
                "--pgdata", self.data,
                "--username", self.superuser,
                "--auth", "scram-sha-256",
                "--pwfile", pwfile,
                "--encoding", "UTF8",
                "--no-locale",
            ),
        )  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base}"
        _run(
            self._as_owner(
                self.bindir / "pg_ctl", "start", "--wait", "--timeout", "60",
                "--pgdata", self.data, "--log", self.base / "postgres.log", "-o", options,
            ),
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner(self.bindir / "pg_ctl", "stop", "--pgdata", self.data, "-m", "fast"),
                check=False,
                capture_output=True,
            )

    def libpq_env(self, user: str, password: str) -> dict[str, str]:
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": user,
            "PGPASSWORD": password,
        }

    def connect(self, database: str, user: str, password: str):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname=database, user=user, password=password
        )


@dataclass
class Server:
    """A server process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.log.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_healthy(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if requests.get(self.health_url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not healthy in time:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass(frozen=True)
class TeamStack:
    """What a client needs to use the running stack."""

    mlflow_uri: str
    admin_username: str
    admin_password: str
    mlflow_username: str  # the pipeline's own account (infra/mlflow/create_pipeline_user.py)
    mlflow_password: str
    prefect_api_url: str
    prefect_auth_string: str
    artifacts: Path
    postgres: Postgres
    db_passwords: dict[str, str]

    @property
    def client_env(self) -> dict[str, str]:
        """The standard client variables, as a team member sets them (infra/README.md)."""
        return {
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_TRACKING_USERNAME": self.mlflow_username,
            "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": self.prefect_auth_string,
        }

    def query(self, database: str, sql: str, *args: object) -> list[tuple]:
        """Rows from one server's database, read as its owner role."""
        conn = self.postgres.connect(database, database, self.db_passwords[database])
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            conn.close()


def _base_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "PREFECT_", "PG"))
    }
    env.update(
        HOME=str(home),
        DO_NOT_TRACK="true",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(home / ".prefect"),
    )
    return env


@pytest.fixture(scope="module")
def team_stack() -> Iterator[TeamStack]:
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as non-root")

    base = Path(tempfile.mkdtemp(prefix="tpl-team-stack-"))
    pg_base = base / "postgres"
    pg_base.mkdir()
    if os.geteuid() == 0:
        owner = "postgres" if _user_exists("postgres") else "nobody"
        os.chown(pg_base, pwd.getpwnam(owner).pw_uid, -1)
        base.chmod(0o711)  # mkdtemp's 0700 would keep that user out
    postgres = Postgres(bindir=bindir, base=pg_base)
    db_passwords = {"mlflow": secrets.token_urlsafe(16), "prefect": secrets.token_urlsafe(16)}
    servers: list[Server] = []
    try:
        postgres.start()
        _run(
            ["bash", str(INFRA / "postgres" / "init-databases.sh")],
            env={
                **os.environ,
                **postgres.libpq_env(postgres.superuser, postgres.password),
                "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
                "POSTGRES_USER": postgres.superuser,
                "MLFLOW_DB_PASSWORD": db_passwords["mlflow"],
                "PREFECT_DB_PASSWORD": db_passwords["prefect"],
            },
        )

        artifacts = base / "artifacts"
        mlflow_port, prefect_port = _free_port(), _free_port()
        admin = ("admin", secrets.token_urlsafe(16))
        prefect_auth = f"team:{secrets.token_urlsafe(16)}"
        mlflow = Server(
            name="mlflow server",
            argv=[
                PYTHON, "-m", "mlflow", "server",
                "--app-name", "basic-auth",
                "--backend-store-uri", f"postgresql+psycopg2://mlflow@127.0.0.1:{postgres.port}/mlflow",
                "--serve-artifacts", "--artifacts-destination", str(artifacts),
                "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            ],
            env={
                **_base_env(base),
                **postgres.libpq_env("mlflow", db_passwords["mlflow"]),
                "MLFLOW_AUTH_CONFIG_PATH": str(INFRA / "mlflow" / "basic_auth.ini"),
                "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                # As in docker-compose.yml: no GenAI job runners.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            },
            health_url=f"http://127.0.0.1:{mlflow_port}/health",
            log=base / "mlflow.log",
        )  # fmt: skip
        prefect = Server(
            name="prefect server",
            argv=[
                PYTHON, "-m", "prefect", "server", "start",
                "--host", "127.0.0.1", "--port", str(prefect_port), "--no-ui",
            ],
            env={
                **_base_env(base),
                "PREFECT_API_DATABASE_CONNECTION_URL": (
                    f"postgresql+asyncpg://prefect:{db_passwords['prefect']}"
                    f"@127.0.0.1:{postgres.port}/prefect"
                ),
                "PREFECT_SERVER_API_AUTH_STRING": prefect_auth,
            },
            health_url=f"http://127.0.0.1:{prefect_port}/api/health",
            log=base / "prefect.log",
        )  # fmt: skip
        servers = [mlflow, prefect]
        for server in servers:
            server.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for server in servers:
            server.wait_healthy(deadline)

        # As the compose stack's mlflow-init does after each start.
        pipeline = ("pipeline", secrets.token_urlsafe(16))
        _run(
            [PYTHON, str(INFRA / "mlflow" / "create_pipeline_user.py")],
            env={
                **_base_env(base),
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                "MLFLOW_ADMIN_USERNAME": admin[0],
                "MLFLOW_ADMIN_PASSWORD": admin[1],
                "MLFLOW_PIPELINE_USERNAME": pipeline[0],
                "MLFLOW_PIPELINE_PASSWORD": pipeline[1],
            },
        )
        yield TeamStack(
            mlflow_uri=f"http://127.0.0.1:{mlflow_port}",
            admin_username=admin[0],
            admin_password=admin[1],
            mlflow_username=pipeline[0],
            mlflow_password=pipeline[1],
            prefect_api_url=f"http://127.0.0.1:{prefect_port}/api",
            prefect_auth_string=prefect_auth,
            artifacts=artifacts,
            postgres=postgres,
            db_passwords=db_passwords,
        )
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_mlflow_rejects_requests_without_valid_credentials(team_stack: TeamStack) -> None:
    url = f"{team_stack.mlflow_uri}/api/2.0/mlflow/experiments/search"
    body = {"max_results": 1}

    assert requests.post(url, json=body, timeout=10).status_code == 401
    wrong = _basic(team_stack.mlflow_username, team_stack.mlflow_password + "x")
    assert requests.post(url, json=body, headers=wrong, timeout=10).status_code == 401
    right = _basic(team_stack.mlflow_username, team_stack.mlflow_password)
    assert requests.post(url, json=body, headers=right, timeout=10).status_code == 200


def test_mlflow_run_and_model_version_are_stored_in_postgres(
    team_stack: TeamStack, tmp_path: Path
) -> None:
    # The pipeline's own account (not the admin) creates its experiment and model, as the
    # pipeline does; a team member reads them but, with the default permission READ
    # (basic_auth.ini), can neither log into them nor move the model's champion.
    suffix = uuid.uuid4().hex[:8]
    admin = _basic(team_stack.admin_username, team_stack.admin_password)
    member = ("member", secrets.token_urlsafe(16))
    api = f"{team_stack.mlflow_uri}/api/2.0/mlflow"
    created = requests.post(
        f"{api}/users/create",
        json={"username": member[0], "password": member[1]},
        headers=admin,
        timeout=30,
    )
    assert created.ok, created.text
    experiment = f"team-stack-{suffix}"
    # A client configured by the standard variables only, as the pipeline is.
    script = """
import sys
import mlflow

mlflow.set_experiment(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.log_param("d_model", 64)
    mlflow.log_metric("val_loss", 1.25, step=3)
    mlflow.log_text("weights", "model/weights.txt")
client = mlflow.MlflowClient()
client.create_registered_model(sys.argv[2])
source = f"runs:/{run.info.run_id}/model"
version = client.create_model_version(sys.argv[2], source, run.info.run_id)
client.set_registered_model_alias(sys.argv[2], "champion", version.version)
print(run.info.run_id, version.version)
"""
    name = f"team-stack-model-{suffix}"
    result = subprocess.run(
        [PYTHON, "-c", script, experiment, name],
        env={**_base_env(tmp_path), **team_stack.client_env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id, version = result.stdout.split()[-2:]

    as_member = _basic(*member)
    experiment_id = requests.get(
        f"{api}/experiments/get-by-name",
        params={"experiment_name": experiment},
        headers=as_member,
        timeout=30,
    ).json()["experiment"]["experiment_id"]
    read = requests.get(f"{api}/runs/get", params={"run_id": run_id}, headers=as_member, timeout=30)
    assert read.status_code == 200
    write = requests.post(
        f"{api}/runs/create", json={"experiment_id": experiment_id}, headers=as_member, timeout=30
    )
    assert write.status_code == 403, write.text
    move = requests.post(
        f"{api}/registered-models/alias",
        json={"name": name, "alias": "champion", "version": version},
        headers=as_member,
        timeout=30,
    )
    assert move.status_code == 403, move.text

    assert team_stack.query("mlflow", "SELECT status FROM runs WHERE run_uuid = %s", run_id) == [
        ("FINISHED",)
    ]
    assert team_stack.query(
        "mlflow", "SELECT key, value FROM params WHERE run_uuid = %s", run_id
    ) == [("d_model", "64")]
    assert team_stack.query(
        "mlflow", "SELECT key, value, step FROM metrics WHERE run_uuid = %s", run_id
    ) == [("val_loss", 1.25, 3)]
    assert team_stack.query(
        "mlflow", "SELECT version, run_id FROM model_versions WHERE name = %s", name
    ) == [(int(version), run_id)]
    # Proxied artifact access: the client sent the file through the server to its destination.
    stored = list(team_stack.artifacts.rglob("model/weights.txt"))
    assert [path.read_text() for path in stored] == ["weights"]


def test_prefect_api_requires_the_auth_string(team_stack: TeamStack) -> None:
    url = f"{team_stack.prefect_api_url}/flows/filter"

    assert requests.post(url, json={}, timeout=10).status_code == 401
    user, password = team_stack.prefect_auth_string.split(":", 1)
    wrong = _basic(user, password + "x")
    assert requests.post(url, json={}, headers=wrong, timeout=10).status_code == 401
    assert requests.post(url, json={}, headers=_basic(user, password), timeout=10).ok


def test_prefect_flow_run_is_stored_in_postgres(team_stack: TeamStack, tmp_path: Path) -> None:
    script = """
from prefect import flow
from prefect.runtime import flow_run

@flow(name="team-stack-smoke")
def smoke(x: int) -> int:
    print("flow-run-id", flow_run.id)
    return x + 1

assert smoke(1) == 2
"""
    result = subprocess.run(
        [PYTHON, "-c", script],
        env={**_base_env(tmp_path), **team_stack.client_env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = re.search(r"flow-run-id (\S+)", result.stdout + result.stderr).group(1)

    rows = team_stack.query(
        "prefect",
        "SELECT flow.name, flow_run.state_type FROM flow_run"
        " JOIN flow ON flow.id = flow_run.flow_id WHERE flow_run.id = %s",
        run_id,
    )
    assert rows == [("team-stack-smoke", "COMPLETED")]


def test_process_worker_runs_a_deployment_of_its_pool(
    team_stack: TeamStack, tmp_path: Path
) -> None:
    # The compose worker's pattern (infra/README.md): a process pool, `prefect deploy` run in the
    # workspace, and a worker elsewhere that runs the deployment's flow runs in that workspace.
    (tmp_path / "smoke.py").write_text(
        "from pathlib import Path\n"
        "from prefect import flow\n\n"
        "@flow(name='team-stack-deployed')\n"
        "def deployed() -> None:\n"
        "    Path('ran-here').write_text('yes')\n"
    )
    env = {**_base_env(tmp_path), **team_stack.client_env}
    pool = f"team-process-{uuid.uuid4().hex[:8]}"

    def prefect(*args: str, cwd: Path = tmp_path) -> str:
        result = subprocess.run(
            [PYTHON, "-m", "prefect", "--no-prompt", *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, (
            f"prefect {args}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        return result.stdout

    prefect("work-pool", "create", pool, "--type", "process")
    prefect(
        "deploy", "smoke.py:deployed", "--name", "nightly", "--pool", pool, "--cron", "0 3 * * *"
    )
    started = prefect("deployment", "run", "team-stack-deployed/nightly")
    run_id = re.search(r"flow-run/([0-9a-f-]{36})", started).group(1)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    prefect("worker", "start", "--pool", pool, "--run-once", cwd=elsewhere)

    rows = team_stack.query(
        "prefect",
        "SELECT deployment.name, flow_run.state_type FROM flow_run"
        " JOIN deployment ON deployment.id = flow_run.deployment_id WHERE flow_run.id = %s",
        run_id,
    )
    assert rows == [("nightly", "COMPLETED")]
    assert (tmp_path / "ran-here").read_text() == "yes"


def test_kubernetes_pool_accepts_the_base_job_template(
    team_stack: TeamStack, tmp_path: Path
) -> None:
    # infra/README.md's command; the server validates the template against the pool type.
    template = INFRA / "k8s" / "base-job-template.json"
    pool = f"tpl-kubernetes-{uuid.uuid4().hex[:8]}"
    env = {**_base_env(tmp_path), **team_stack.client_env}
    command = [PYTHON, "-m", "prefect", "--no-prompt", "work-pool"]

    created = subprocess.run(
        [*command, "create", pool, "--type", "kubernetes", "--base-job-template", str(template)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-2000:]

    rows = team_stack.query(
        "prefect", "SELECT type, base_job_template FROM work_pool WHERE name = %s", pool
    )
    assert rows == [("kubernetes", json.loads(template.read_text()))]


MakeWorkspace = Callable[[str], Path]  # tests/integration/conftest.py
PIPELINE_TIMEOUT_S = 1200  # the tiny pipeline takes minutes on 2 cores: only a guard
TASK_RUN_RECORDING_TIMEOUT_S = 60


@pytest.mark.timeout(PIPELINE_TIMEOUT_S + 120)
def test_tiny_pipeline_runs_and_model_land_in_the_team_databases(
    team_stack: TeamStack, make_workspace: MakeWorkspace, tmp_path: Path
) -> None:
    # A team member's `tpl run`, configured by the standard client variables only.
    root = make_workspace("team-pipeline")
    result = subprocess.run(
        [str(Path(PYTHON).parent / "tpl"), "run", "--profile", "tiny"],
        cwd=root,
        # PYTHONSAFEPATH: the workspace holds copies of some package files (DVC deps).
        env={**_base_env(tmp_path), **team_stack.client_env, "PYTHONSAFEPATH": "1"},
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    parent = re.search(r"MLflow run: \S*/runs/(\w+)", result.stdout)[1]

    def mlflow_rows(sql: str, *args: object) -> list[tuple]:
        return team_stack.query("mlflow", sql, *args)

    assert mlflow_rows("SELECT status FROM runs WHERE run_uuid = %s", parent) == [("FINISHED",)]
    stage_runs = dict(
        mlflow_rows(
            "SELECT stage.value, runs.run_uuid FROM runs"
            " JOIN tags parent ON parent.run_uuid = runs.run_uuid"
            " AND parent.key = 'mlflow.parentRunId'"
            " JOIN tags stage ON stage.run_uuid = runs.run_uuid AND stage.key = 'stage'"
            " WHERE parent.value = %s AND runs.status = 'FINISHED'",
            parent,
        )
    )
    assert set(stage_runs) == set(STAGES)
    evaluation = json.loads((root / "metrics" / "evaluate.json").read_text())
    [(accuracy,)] = mlflow_rows(
        "SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'test_accuracy'",
        stage_runs["evaluate"],
    )
    assert accuracy == pytest.approx(evaluation["test_accuracy"])
    registration = json.loads((root / "metrics" / "register.json").read_text())
    name, version = registration["model_name"], int(registration["version"])
    assert mlflow_rows(
        "SELECT run_id, status FROM model_versions WHERE name = %s AND version = %s", name, version
    ) == [(stage_runs["register"], "READY")]
    aliases = mlflow_rows(
        "SELECT alias FROM registered_model_aliases WHERE name = %s AND version = %s",
        name,
        version,
    )
    assert sorted(aliases) == [("challenger",), ("champion",)]  # the first version is champion

    [(flow_run_id,)] = mlflow_rows(
        "SELECT value FROM tags WHERE run_uuid = %s AND key = 'prefect.flow_run_id'", parent
    )
    assert team_stack.query(
        "prefect",
        "SELECT flow.name, flow_run.state_type FROM flow_run"
        " JOIN flow ON flow.id = flow_run.flow_id WHERE flow_run.id = %s",
        flow_run_id,
    ) == [("pipeline", "COMPLETED")]
    subflows = team_stack.query(
        "prefect",
        "SELECT flow.name, flow_run.state_type FROM flow_run"
        " JOIN flow ON flow.id = flow_run.flow_id"
        " JOIN task_run parent ON parent.id = flow_run.parent_task_run_id"
        " WHERE parent.flow_run_id = %s",
        flow_run_id,
    )
    groups = ("data", "evaluation", "training")
    assert sorted(subflows) == [(group, "COMPLETED") for group in groups]
    # Task runs reach the server as events, recorded a moment after the flow returns.
    deadline = time.monotonic() + TASK_RUN_RECORDING_TIMEOUT_S
    while True:
        task_runs = team_stack.query(
            "prefect",
            "SELECT task_run.name, task_run.state_type FROM task_run"
            " JOIN flow_run ON flow_run.id = task_run.flow_run_id"
            " JOIN task_run parent ON parent.id = flow_run.parent_task_run_id"
            " WHERE parent.flow_run_id = %s",
            flow_run_id,
        )
        states = {name.rsplit("-", 1)[0]: state for name, state in task_runs}
        if states == dict.fromkeys(STAGES, "COMPLETED") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == dict.fromkeys(STAGES, "COMPLETED")
