"""infra/ checked offline: schemas for the file formats, and the facts that tie the files together.

The compose file is validated against the Compose Specification's JSON schema, vendored as
infra/schemas/compose-spec.json (source in infra/README.md); the Kubernetes manifests against
the API schemas that the kubernetes-validate package ships; the Prefect base job template with
Prefect's own validation and rendering.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
K8S = INFRA / "k8s"
# The oldest Kubernetes the manifests promise to work on, and the newest schema available.
K8S_VERSIONS = ("1.30.0", "latest")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def _env_example() -> dict[str, str]:
    entries = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


# --- docker compose ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((INFRA / "schemas" / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)

    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_compose())]

    assert errors == []


def test_compose_dependencies_exist_and_wait_for_readiness() -> None:
    services = _services()
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            expected = (
                "service_completed_successfully"
                if _is_one_shot(services[target])
                else "service_healthy"
            )
            assert spec["condition"] == expected, f"{name} -> {target}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        assert _is_one_shot(service) or "test" in service.get("healthcheck", {}), name


# Keys whose values are credentials, and credentials embedded in URLs (scheme://user:pw@host).
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|ACCESS_KEY|USERNAME")
URL_PASSWORD = re.compile(r"://[^/\s:@]+:(\$\{[^}]*\}|[^@\s]+)@")
REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}$")


def test_compose_credentials_are_references_to_the_env_file() -> None:
    for name, service in _services().items():
        for key, value in service.get("environment", {}).items():
            if SECRET_KEY.search(key):
                assert REFERENCE.match(str(value)), f"{name}: {key} is not a ${{VAR}} reference"
    url_passwords = URL_PASSWORD.findall(COMPOSE_FILE.read_text())
    assert url_passwords  # Prefect's database URL has one
    for password in url_passwords:
        assert REFERENCE.match(password), f"literal password in a URL: {password}"


def test_env_example_defines_every_variable_the_compose_file_uses() -> None:
    # `$${X}` is compose's escape for the container's own shell: not a compose variable.
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    example = _env_example()

    assert used - set(example) == set()
    # Every credential in the example is a placeholder to replace.
    for key, value in example.items():
        if SECRET_KEY.search(key) and "USERNAME" not in key and "ACCESS_KEY" not in key:
            assert "change-me" in value, f".env.example: {key} looks like a real secret"


def test_compose_mounts_and_build_contexts_exist() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source}"
        build = service.get("build")
        if build:
            build = {"context": build} if isinstance(build, str) else build
            context = INFRA / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_gpu_trainer_is_optional_and_reserves_nvidia_gpus() -> None:
    trainer = _services()["trainer"]

    assert trainer["profiles"] == ["gpu"]
    assert trainer["build"]["args"]["TORCH_VARIANT"] == "cu128"
    [device] = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert trainer["command"] == ["tpl", "stage", "pretrain"]


def test_images_run_the_locked_versions() -> None:
    pins = _lock_pins()
    services = _services()

    assert services["prefect-server"]["image"].startswith(f"prefecthq/prefect:{pins['prefect']}-")
    worker = yaml.safe_load_all((K8S / "prefect-worker.yaml").read_text())
    [deployment] = [doc for doc in worker if doc["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"prefecthq/prefect:{pins['prefect']}-")
    mlflow_dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert f"ghcr.io/mlflow/mlflow:v{pins['mlflow']}" in mlflow_dockerfile
    assert f"psycopg2-binary=={pins['psycopg2-binary']}" in mlflow_dockerfile


# --- Dockerfiles ---------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _final_user(dockerfile: Path) -> str | None:
    users = [args for instruction, args in _instructions(dockerfile) if instruction == "USER"]
    return users[-1].strip() if users else None


def test_project_image_installs_torch_first_then_the_lock() -> None:
    instructions = _instructions(INFRA / "Dockerfile")
    args = {a.split("=")[0]: a.split("=", 1)[1] for i, a in instructions if i == "ARG" and "=" in a}
    runs = [a for i, a in instructions if i == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if "torch==" in run)
    lock_step = next(i for i, run in enumerate(runs) if "-r requirements.lock" in run)
    makefile_torch = re.search(r"^TORCH_VERSION := (\S+)", (ROOT / "Makefile").read_text(), re.M)

    assert args["TORCH_VARIANT"] == "cpu"
    assert args["TORCH_VERSION"] == makefile_torch.group(1)
    assert "download.pytorch.org/whl/${TORCH_VARIANT}" in runs[torch_step]
    assert torch_step < lock_step
    assert ("COPY", "requirements.lock ./") in instructions
    # The variants the build accepts include every one the compose file asks for.
    accepted = re.search(r"case \"\$\{TORCH_VARIANT\}\" in ([^)]*)\)", runs[torch_step]).group(1)
    wanted = {
        service["build"]["args"]["TORCH_VARIANT"]
        for service in _services().values()
        if isinstance(service.get("build"), dict) and service["build"].get("args")
    }
    assert wanted <= {variant.strip() for variant in accepted.split("|")}


def test_project_image_copies_existing_files() -> None:
    for instruction, args in _instructions(INFRA / "Dockerfile"):
        if instruction == "COPY":
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "mlflow/Dockerfile"])
def test_images_run_as_a_non_root_user(dockerfile: str) -> None:
    user = _final_user(INFRA / dockerfile)

    assert user is not None
    assert user.split(":")[0] not in {"root", "0"}


# --- server configuration ------------------------------------------------------------------------


def test_mlflow_auth_config_holds_no_secret() -> None:
    # The live stack test (test_team_stack.py) shows MLflow reading it, with the admin from the
    # environment; here, what it must not contain.
    config = configparser.ConfigParser()
    config.read(INFRA / "mlflow" / "basic_auth.ini")
    section = config["mlflow"]

    assert "admin_password" not in section
    assert section["database_uri"].startswith("postgresql+psycopg2:")
    assert not URL_PASSWORD.search(section["database_uri"])
    # Anyone may read; writing, and moving `champion`, needs a grant (or owning the model).
    assert section["default_permission"] == "READ"


def test_the_pipeline_logs_as_its_own_account_not_the_admin() -> None:
    pipeline_env = _compose()["x-pipeline-env"]
    assert pipeline_env["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_PIPELINE_USERNAME")
    assert pipeline_env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_PIPELINE_PASSWORD")
    init = _services()["mlflow-init"]
    assert init["command"][-1] == "/etc/mlflow/create_pipeline_user.py"
    for name in ("prefect-worker", "trainer"):
        assert "mlflow-init" in _services()[name]["depends_on"], name


def _dependencies(name: str, services: dict[str, Any]) -> set[str]:
    direct = set(services[name].get("depends_on", {}))
    return direct.union(*(_dependencies(target, services) for target in direct))


def test_nothing_starts_while_a_placeholder_secret_is_left() -> None:
    services = _services()
    for name in services:
        if name != "secrets-check":
            assert "secrets-check" in _dependencies(name, services), name
    check = services["secrets-check"]
    placeholders = {key for key, value in _env_example().items() if "change-me" in value}
    assert placeholders <= set(check["environment"])
    script = check["command"][0].replace("$$", "$")
    refused = subprocess.run(
        ["sh", "-ec", script],
        env={"PATH": os.environ["PATH"], **dict.fromkeys(placeholders, "change-me-x")},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "MLFLOW_ADMIN_PASSWORD" in refused.stderr
    accepted = subprocess.run(
        ["sh", "-ec", script],
        env={"PATH": os.environ["PATH"], **dict.fromkeys(placeholders, "a-real-secret-4711")},
        capture_output=True,
        text=True,
    )
    assert accepted.returncode == 0, accepted.stderr


def test_published_ports_listen_on_localhost_unless_configured() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("${TPL_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


@pytest.mark.parametrize(
    "script", ["postgres/init-databases.sh", "slurm/pretrain.sbatch"], ids=["init-db", "sbatch"]
)
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(INFRA / script)], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr


def test_compose_shell_scripts_parse() -> None:
    scripts = {
        name: service["command"][0].replace("$$", "$")  # compose's escape, as compose undoes it
        for name, service in _services().items()
        if service.get("entrypoint", [None])[0] == "/bin/sh"
    }
    assert scripts  # minio-init's
    for name, script in scripts.items():
        result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_sbatch_runs_one_task_per_gpu_through_srun() -> None:
    text = (INFRA / "slurm" / "pretrain.sbatch").read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))

    # Lightning refuses to start unless tasks per node match the devices it uses.
    assert directives["gres"] == f"gpu:{directives['ntasks-per-node']}"
    assert directives["signal"].startswith("SIGUSR1@")  # Lightning's auto-requeue
    assert re.search(r"^srun .*\btpl stage pretrain$", text, re.M)


# --- DVC remote ----------------------------------------------------------------------------------


@pytest.mark.slow  # a few DVC processes: ~15 s
def test_readme_dvc_remote_commands_send_a_push_to_the_s3_endpoint(tmp_path: Path) -> None:
    # The README's `dvc remote` lines as written, the endpoint moved to a port of this machine
    # where nothing listens: the push fails connecting to it. Without the S3 plugin (dvc-s3,
    # pinned in requirements.lock) DVC refuses the s3:// remote before connecting anywhere.
    section = (INFRA / "README.md").read_text().split("## Share the data", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.startswith("dvc remote ")]
    assert len(commands) == 2, block
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # One attempt: botocore would otherwise retry the refused connection with back-off.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "team", "AWS_SECRET_ACCESS_KEY": "secret"}
    env |= {"AWS_MAX_ATTEMPTS": "1", "DVC_NO_ANALYTICS": "1"}

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dvc", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    assert dvc("init", "--quiet").returncode == 0
    for command in commands:
        configured = dvc(*shlex.split(command.replace("http://team-host:9000", endpoint))[1:])
        assert configured.returncode == 0, configured.stderr
    (tmp_path / "shared.txt").write_text("the team's data\n")
    assert dvc("add", "shared.txt").returncode == 0
    pushed = dvc("push")

    assert pushed.returncode != 0
    assert f'Could not connect to the endpoint URL: "{endpoint}/dvc/' in pushed.stderr


# --- Kubernetes ----------------------------------------------------------------------------------


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _k8s_validate(document: dict[str, Any], version: str) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    documents = _k8s_documents()
    assert {name for name, _ in documents} >= {
        "prefect-worker.yaml",
        "pretrain-multinode.yaml",
        "secret.example.yaml",
        "workspace.yaml",
    }
    for name, document in documents:
        try:
            _k8s_validate(document, version)
        except Exception as error:  # kubernetes-validate's errors carry the path
            pytest.fail(f"{name} {document['kind']}/{document['metadata']['name']}: {error}")


def test_kubernetes_objects_share_one_namespace_and_the_secret_has_placeholders() -> None:
    documents = [doc for _, doc in _k8s_documents()]
    [secret] = [doc for doc in documents if doc["kind"] == "Secret"]
    template = json.loads((K8S / "base-job-template.json").read_text())

    namespaces = {doc["metadata"]["namespace"] for doc in documents}
    assert namespaces == {template["variables"]["properties"]["namespace"]["default"]}
    for key, value in secret["stringData"].items():
        assert "<" in value or "example" in value, (
            f"secret.example.yaml: {key} is not a placeholder"
        )


def test_prefect_worker_is_bound_to_its_role_and_reads_existing_secret_keys() -> None:
    documents = {
        doc["kind"]: doc for doc in yaml.safe_load_all((K8S / "prefect-worker.yaml").read_text())
    }
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    [subject] = documents["RoleBinding"]["subjects"]

    assert pod["serviceAccountName"] == documents["ServiceAccount"]["metadata"]["name"]
    assert subject["name"] == pod["serviceAccountName"]
    assert documents["RoleBinding"]["roleRef"]["name"] == documents["Role"]["metadata"]["name"]
    for variable in pod["containers"][0]["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]


def test_multinode_job_wires_torchrun_to_the_indexed_pods() -> None:
    documents = {
        doc["kind"]: doc
        for doc in yaml.safe_load_all((K8S / "pretrain-multinode.yaml").read_text())
    }
    job, service = documents["Job"], documents["Service"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    options = dict(arg.lstrip("-").split("=", 1) for arg in container["args"] if "=" in arg)
    host, port = options["rdzv-endpoint"].rsplit(":", 1)

    assert container["command"] == ["torchrun"]
    assert container["args"][-4:] == ["--no-python", "tpl", "stage", "pretrain"]
    assert job["spec"]["completionMode"] == "Indexed"
    nodes = int(options["nnodes"])
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    assert int(options["nproc-per-node"]) == container["resources"]["limits"]["nvidia.com/gpu"]
    assert options["node-rank"] == "$(JOB_COMPLETION_INDEX)"
    assert options["rdzv-backend"] == "static"
    # Rank 0's stable name: <job>-0.<subdomain>, the subdomain being the headless Service.
    assert host == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert (
        service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    )
    workspace = {
        doc["kind"]: doc for doc in yaml.safe_load_all((K8S / "workspace.yaml").read_text())
    }
    claim = workspace["PersistentVolumeClaim"]["metadata"]["name"]
    for spec in (pod, workspace["Job"]["spec"]["template"]["spec"]):
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert claims == [claim]
    assert container["workingDir"].startswith("/workspace/")


# --- Prefect Kubernetes work pool ----------------------------------------------------------------


def _job_template() -> dict[str, Any]:
    return json.loads((K8S / "base-job-template.json").read_text())


def _render(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """What a worker does with the template: variable defaults and a deployment's overrides."""
    from prefect.utilities.templating import apply_values

    properties = template["variables"]["properties"]
    values = {k: p["default"] for k, p in properties.items() if p.get("default") is not None}
    return apply_values(copy.deepcopy(template["job_configuration"]), {**values, **overrides})


def test_base_job_template_passes_prefects_validation() -> None:
    from prefect.server.schemas.actions import validate_base_job_template

    template = _job_template()
    variables = template["variables"]

    assert set(template) == {"job_configuration", "variables"}
    validate_base_job_template(template)
    jsonschema.Draft202012Validator.check_schema(variables)
    for prop in variables["properties"].values():
        if "default" in prop:
            jsonschema.validate(prop["default"], prop)


def test_base_job_template_renders_a_valid_gpu_job() -> None:
    configuration = _render(_job_template(), {"gpu_count": 2, "image": "registry/tpl:cu128"})
    manifest = configuration["job_manifest"]
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())

    # The shape prefect-kubernetes insists on.
    assert (pod["restartPolicy"], container["name"]) == ("Never", "prefect-job")
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)  # not PodSpec fields
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["image"] == "registry/tpl:cu128"
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    # Placeholders the worker fills per flow run (name, env, command) are left out here.
    manifest["metadata"]["generateName"] = "tpl-flow-run-"
    for version in K8S_VERSIONS:
        _k8s_validate(manifest, version)
