"""The shipping files agree with the code and with each other: every command an image, compose
or a manifest runs exists (with those options), every long-running compose service has a
healthcheck its dependents wait on, secrets are referenced and never written down, and the
same variable names drive `realty up`, compose and Kubernetes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from realty.settings import REPO_ROOT, Settings
from realty_ops.cli import app as realty_app
from realty_ops.stack import SERVICE_ADDRESSES, service_env
from tests.ship.shipping import (
    BASE_CONTEXT,
    BASE_DOCKERFILE,
    DEPLOY_COMPOSE,
    DOCKER,
    K8S,
    ROOT,
    compose,
    configmap,
    dockerfile_stages,
    exec_form,
    final_stages,
    healthcheck_command,
    image_dockerfiles,
    image_stage,
    manifests,
    pod_containers,
    published_images,
    stage_chain,
)

PLATFORM_IMAGES = {"code", "serving", "ui", "source"}  # ours; mlflow runs MLflow's server
PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim-\w+$")  # exact tags, never moving ones
UV_IMAGE = re.compile(r"^ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+$")
ONE_SHOT = "service_completed_successfully"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
SERVING_PROBES = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
# The images docker-compose.deploy.yml runs: docker.io/<user>/realty-<image>:<tag> (from .env).
PUBLISHED_IMAGE = re.compile(
    r"^docker\.io/\$\{DOCKERHUB_USERNAME:\?[^}]+\}/realty-(?P<image>[a-z]+):\$\{IMAGE_TAG:-latest\}$"
)


def click_command(program: str) -> Any:
    """The click command behind each program the images run."""
    if program == "realty":
        return typer.main.get_command(realty_app)
    if program == "dagster":
        from dagster._cli import cli
    elif program == "dagster-daemon":
        from dagster._daemon.cli import cli
    elif program == "dagster-webserver":
        from dagster_webserver.cli import cli
    elif program == "mlflow":
        from mlflow.cli import cli
    else:
        raise AssertionError(f"{program}: not a program of our images")
    return cli


def assert_command_exists(argv: list[str]) -> None:
    """Subcommands resolve and every option is one the command declares."""
    program, *args = argv
    if program == "healthcheck":  # docker/healthcheck.py
        assert len(args) == 1 and args[0].startswith("http://127.0.0.1:"), argv
        return
    command = click_command(program)
    # Groups by their `commands`: typer's group is of its own click fork, not a click.Group.
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"{argv}: {program} has no subcommand {name!r}"
        command = sub
    assert not hasattr(command, "commands"), f"{argv} names a group, not a command"
    options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in options]
    assert not unknown, f"{argv}: unknown options {unknown}"


def our_compose_services() -> dict[str, dict[str, Any]]:
    """Compose services built from docker/ (third-party images are checked by their owners)."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def commands_run() -> list[list[str]]:
    """Every command line of our images: CMD and HEALTHCHECK of each image, compose commands and
    healthchecks, Kubernetes commands and exec probes."""
    commands = [exec_form(final_stages(BASE_DOCKERFILE)[BASE_CONTEXT].last("CMD"))]
    for image in image_dockerfiles():
        stage = image_stage(image)
        commands += [exec_form(stage.last("CMD")), healthcheck_command(stage)]
    for service in our_compose_services().values():
        if "command" in service:
            commands.append(service["command"])
        if "healthcheck" in service:  # one-shot services have none
            commands.append(service["healthcheck"]["test"][1:])  # after "CMD"
    for obj in manifests():
        for container in pod_containers(obj):
            if "command" in container:
                commands.append(container["command"])
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    commands.append(container[probe]["exec"]["command"])
    return commands


@pytest.mark.parametrize("argv", commands_run(), ids=" ".join)
def test_every_command_of_the_images_exists(argv: list[str]) -> None:
    assert_command_exists(list(argv))


def test_the_checker_catches_a_wrong_command() -> None:
    with pytest.raises(AssertionError, match="no subcommand"):
        assert_command_exists(["realty", "serving"])
    with pytest.raises(AssertionError, match="unknown options"):
        assert_command_exists(["mlflow", "server", "--artifact-destination", "s3://x"])


def test_each_platform_image_runs_a_realty_subcommand() -> None:
    """Images, compose and Kubernetes start our code only through `realty` (the commands the
    host tests run); Dagster's own CLIs appear only in healthchecks and probes."""
    assert set(image_dockerfiles()) == PLATFORM_IMAGES | {"mlflow"}
    assert {image: exec_form(image_stage(image).last("CMD")) for image in PLATFORM_IMAGES} == {
        "code": ["realty", "dagster", "code-server"],
        "serving": ["realty", "serve"],
        "ui": ["realty", "ui"],
        "source": ["realty", "source"],
    }
    for name, service in our_compose_services().items():
        path = DOCKER / Path(service["build"]["dockerfile"]).name
        [stage] = final_stages(path).values()
        if stage.name != "mlflow":
            assert service.get("command", exec_form(stage.last("CMD")))[0] == "realty", name
    for obj in manifests():
        for container in pod_containers(obj):
            if "realty-mlflow" not in container["image"]:
                assert container["command"][0] == "realty", container["name"]


def test_images_pin_python_install_from_the_lock_and_drop_root() -> None:
    """Every image ends on a python slim stage pinned by exact tag that copies the venv built in
    a stage of its own from uv.lock (in its own file, or in base.Dockerfile for the platform
    images), and runs as a numeric user that is not root."""
    for image, path in image_dockerfiles().items():
        chain = stage_chain(path, image)
        runtime = chain[-1]
        assert PYTHON_BASE.match(runtime.base), (image, runtime.base)
        assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime.instructions, image
        stages = dockerfile_stages(BASE_DOCKERFILE if runtime.name == BASE_CONTEXT else path)
        assert UV_IMAGE.match(stages["uv"].base), image
        assert any("--frozen" in args for _, args in stages["build"].instructions), image
        assert any("uv.lock" in args for _, args in stages["build"].instructions), image
        users = [stage.last("USER") for stage in chain if stage.last("USER")]
        user = users[0].split(":")[0]  # the image's own, else the base's
        assert user.isdigit() and user != "0", (image, user)
        healthcheck_command(image_stage(image))  # each image checks its own health


def bake_file() -> str:
    return (DOCKER / "docker-bake.hcl").read_text()


def bake_platform_images() -> list[str]:
    """The images of docker-bake.hcl's matrix target, which builds them on the target `base`."""
    [names] = re.findall(r"matrix\s*=\s*\{\s*image\s*=\s*\[([^\]]*)\]", bake_file())
    return re.findall(r'"([a-z]+)"', names)


def test_the_bake_file_builds_every_image_on_the_shared_base() -> None:
    text = bake_file()
    assert sorted(bake_platform_images()) == sorted(PLATFORM_IMAGES)
    assert 'dockerfile = "docker/${image}.Dockerfile"' in text
    assert 'contexts   = { base = "target:base" }' in text
    assert re.search(r'target "base" \{\s*context\s*=\s*"\."\s*dockerfile = "docker/base', text)
    assert re.search(r'target "mlflow" \{\s*context\s*=\s*"\."\s*dockerfile = "docker/mlflow', text)
    for image in PLATFORM_IMAGES:  # what the context `base` stands for is all they start FROM
        bases = {s.base for s in dockerfile_stages(image_dockerfiles()[image]).values()}
        assert bases == {BASE_CONTEXT}, image
    assert BASE_CONTEXT not in {
        s.base for s in dockerfile_stages(image_dockerfiles()["mlflow"]).values()
    }


def test_the_image_workflow_builds_every_image_compose_and_kubernetes_use() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    built = set(published_images())
    assert built == set(image_dockerfiles())
    [bake] = [s for s in workflow["jobs"]["build"]["steps"] if "bake-action" in s.get("uses", "")]
    assert bake["with"]["files"] == "docker/docker-bake.hcl"
    assert bake["with"]["targets"] == "${{ matrix.image }}"
    # Compose builds the same files; the platform images get the base from the migrate service,
    # whose image is base.Dockerfile's.
    services = our_compose_services()
    [base_service] = [
        n for n, s in services.items() if s["build"]["dockerfile"].endswith("/base.Dockerfile")
    ]
    for name, service in services.items():
        dockerfile = ROOT / "docker" / Path(service["build"]["dockerfile"]).name
        if name == base_service:
            continue
        image = dockerfile.name.removesuffix(".Dockerfile")
        assert image in built, name
        contexts = service["build"].get("additional_contexts", {})
        if image in PLATFORM_IMAGES:
            assert contexts == {BASE_CONTEXT: f"service:{base_service}"}, name
        else:
            assert not contexts, name
    images = {c["image"] for obj in manifests() for c in pod_containers(obj)}
    names = {image.split("/")[-1].split(":")[0] for image in images}
    assert names <= {f"realty-{image}" for image in built}


def test_the_deploy_compose_is_the_stack_on_the_published_images() -> None:
    """docker-compose.deploy.yml builds nothing: each of our services runs the image the images
    workflow publishes for its Dockerfile (the code image for `migrate`, whose base image is not
    published), and is otherwise the development file's service, key for key."""
    built, deployed = compose(), compose(DEPLOY_COMPOSE)
    assert deployed.keys() == built.keys()
    assert deployed["volumes"] == built["volumes"]
    assert deployed["services"].keys() == built["services"].keys()
    for name, service in built["services"].items():
        deploy = deployed["services"][name]
        assert "build" not in deploy, name
        if "build" not in service:  # a third-party image, pinned in both files alike
            assert deploy == service, name
            continue
        match = PUBLISHED_IMAGE.match(deploy["image"])
        assert match, (name, deploy["image"])
        dockerfile = Path(service["build"]["dockerfile"]).name.removesuffix(".Dockerfile")
        assert match["image"] == ("code" if dockerfile == BASE_CONTEXT else dockerfile), name
        assert match["image"] in published_images(), name
        without_image = {k: v for k, v in deploy.items() if k != "image"}
        assert without_image == {k: v for k, v in service.items() if k != "build"}, name


def test_every_long_running_compose_service_has_a_healthcheck_its_dependents_wait_on() -> None:
    services = compose()["services"]
    one_shots = {
        dependency
        for service in services.values()
        for dependency, rule in service.get("depends_on", {}).items()
        if rule["condition"] == ONE_SHOT
    }
    assert one_shots == {"create-bucket", "migrate"}
    for name, service in services.items():
        if name in one_shots:
            assert service.get("restart", "no") == "no", name
            continue
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            expected = ONE_SHOT if dependency in one_shots else "service_healthy"
            assert rule["condition"] == expected, (name, dependency)


def test_compose_keeps_state_in_named_volumes_only() -> None:
    spec = compose()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in spec["volumes"] or source.startswith("./postgres/"), (name, volume)


def _dagster_yaml(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def test_the_dagster_instances_share_the_embedded_settings() -> None:
    embedded = _dagster_yaml((REPO_ROOT / "dagster.yaml").read_text())
    compose_instance = _dagster_yaml((DOCKER / "dagster" / "dagster.yaml").read_text())
    cluster_instance = _dagster_yaml(configmap("dagster-instance")["dagster.yaml"])
    for instance in (compose_instance, cluster_instance):
        shared = {k: v for k, v in instance.items() if k not in {"run_launcher", "compute_logs"}}
        assert shared == embedded
        assert instance["compute_logs"]["class"] == "S3ComputeLogManager"
    assert compose_instance["run_launcher"]["class"] == "DefaultRunLauncher"
    assert cluster_instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert yaml.safe_load((DOCKER / "dagster" / "workspace.yaml").read_text()) == yaml.safe_load(
        configmap("dagster-instance")["workspace.yaml"]
    )


def test_the_compose_dagster_instance_is_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    for name in ("REALTY_DAGSTER_PG_URL", "REALTY_S3_BUCKET", "REALTY_S3_ENDPOINT_URL"):
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(DOCKER / "dagster"))
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"


# Variables.

EMBEDDED_NAMES = {f"REALTY_{name.upper()}" for name in Settings.model_fields} | {
    "REALTY_DAGSTER_PG_URL"  # derived by `realty up` for Dagster's instance (dagster.yaml)
}


def env_example_names() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))


def compose_platform_env() -> dict[str, str]:
    return compose()["x-platform"]["environment"]


def k8s_env_names() -> set[str]:
    """Names the manifests set: the realty-config ConfigMap, the realty-secrets keys documented
    in docs/deploy.md, and each container's own env."""
    names = set(configmap("realty-config")) | secret_keys()
    for obj in manifests():
        for container in pod_containers(obj):
            names |= {env["name"] for env in container.get("env", [])}
    return names


def secret_keys() -> set[str]:
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    return set(re.findall(r"--from-literal=([A-Z0-9_]+)=", deploy_doc))


def test_every_variable_the_code_reads_is_documented() -> None:
    reads = set()
    pattern = re.compile(r"(?:os\.environ\.get\(|os\.environ\[|os\.getenv\()\s*\"([A-Z0-9_]+)\"")
    for package in ("realty", "realty_ops", "realty_assets", "serving", "ui", "source"):
        for path in (ROOT / package).rglob("*.py"):
            reads |= set(pattern.findall(path.read_text()))
    assert reads - env_example_names() == set()


def test_compose_and_kubernetes_use_the_embedded_names() -> None:
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", (DOCKER / "docker-compose.yml").read_text()))
    assert interpolated - env_example_names() == set(), "set in .env, so listed in .env.example"
    deploy_interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", DEPLOY_COMPOSE.read_text()))
    assert deploy_interpolated - interpolated == {"DOCKERHUB_USERNAME", "IMAGE_TAG"}
    assert deploy_interpolated - env_example_names() == set()
    for names in (set(compose_platform_env()), interpolated, k8s_env_names()):
        realty_names = {n for n in names if n.startswith("REALTY_")}
        assert realty_names <= EMBEDDED_NAMES
    # The platform containers get the same variables in compose and on the cluster...
    cluster = set(configmap("realty-config")) | secret_keys()
    assert set(compose_platform_env()) == cluster - {"MLFLOW_BACKEND_STORE_URI"}
    # ...and those `realty up` derives for its children are among them (but the addresses:
    # containers have fixed ports and reach each other by service name).
    addresses = {f"REALTY_{name.upper()}" for name in SERVICE_ADDRESSES}
    derived = {n for n in service_env(Settings()) if n.startswith("REALTY_")} - addresses
    assert derived <= set(compose_platform_env())


def test_secrets_are_referenced_never_written_down() -> None:
    assert not [o for o in manifests() if o["kind"] == "Secret"]
    for obj in manifests():
        for container in pod_containers(obj):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), env
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${") and ":?" in str(value), (name, key)
    for path in DOCKER.glob("*.Dockerfile"):
        for stage in dockerfile_stages(path).values():
            for keyword, args in stage.instructions:
                assert not (keyword in {"ENV", "ARG"} and SECRET_NAME.search(args)), (path, args)


def test_the_s3_switch_moves_the_artifacts_of_the_embedded_stack(tmp_path: Path) -> None:
    from realty_ops.stack import mlflow_command, prepare_dagster_home

    local = Settings(home=tmp_path)
    switched = Settings(home=tmp_path, s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9")
    assert str(local.mlflow_artifacts_dir) in mlflow_command(local)
    assert "s3://b/mlflow" in mlflow_command(switched)
    assert service_env(switched)["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9"
    prepare_dagster_home(switched)
    instance = yaml.safe_load((switched.dagster_home / "dagster.yaml").read_text())
    assert instance["compute_logs"]["config"] == {
        "bucket": "b",
        "prefix": "dagster/compute-logs",
        "endpoint_url": "http://127.0.0.1:9",
    }
    prepare_dagster_home(local)
    assert "compute_logs" not in yaml.safe_load((local.dagster_home / "dagster.yaml").read_text())


def serving_paths() -> set[str]:
    from serving.main import create_app

    return set(create_app().openapi()["paths"])


def test_the_kubernetes_manifests_expose_serving_with_probes_and_autoscaling() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in manifests()}
    serving = objects[("Deployment", "serving")]
    [container] = pod_containers(serving)
    # Liveness: the process answers (a restart would not load a missing model). Readiness:
    # traffic only once the price model is loaded.
    probes = {probe: container[probe]["httpGet"]["path"] for probe in SERVING_PROBES}
    assert probes == SERVING_PROBES
    assert set(probes.values()) <= serving_paths()
    assert {"requests", "limits"} <= set(container["resources"])
    hpa = objects[("HorizontalPodAutoscaler", "serving")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "serving"
    assert ("Service", "serving") in objects and ("Deployment", "ui") in objects
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = {Path(p).name for p in kustomization["resources"]}
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_compose_waits_for_a_live_serving_not_a_ready_one() -> None:
    # The web app, serving's dependent, works (and says why) before any price model exists;
    # waiting for /ready would keep a fresh stack's web app from ever starting.
    test = compose()["services"]["serving"]["healthcheck"]["test"]
    assert test[-1] == "http://127.0.0.1:8000/health"
    assert "/health" in serving_paths()


def test_the_workspace_reaches_the_code_server_in_compose_and_on_the_cluster() -> None:
    [location] = yaml.safe_load((DOCKER / "dagster" / "workspace.yaml").read_text())["load_from"]
    host, port = location["grpc_server"]["host"], location["grpc_server"]["port"]
    assert host in compose()["services"]
    services = {o["metadata"]["name"]: o for o in manifests() if o["kind"] == "Service"}
    assert port in {p["port"] for p in services[host]["spec"]["ports"]}
    code = image_stage("code")
    assert str(port) in code.last("EXPOSE").split()
    assert f"REALTY_DAGSTER_CODE_PORT={port}" in code.last("ENV").split()


def test_compose_restates_the_settings_an_image_sets() -> None:
    """Compose also passes ../.env, where a setting copied empty from .env.example, or a port
    moved for the host, would hide the image's value: what an image sets compose sets again."""
    services = our_compose_services()
    for name, service in services.items():
        path = DOCKER / Path(service["build"]["dockerfile"]).name
        chain = stage_chain(path, final_stages(path).popitem()[0])
        image_env = {
            assignment.split("=")[0]
            for stage in chain
            for keyword, args in stage.instructions
            if keyword == "ENV"
            for assignment in args.split()
        }
        restated = set(service.get("environment", compose_platform_env()))
        missing = {n for n in image_env if n.startswith("REALTY_")}
        assert missing <= restated, (name, missing - restated)
