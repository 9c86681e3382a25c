"""Readers for the shipping files (Dockerfiles, compose, manifests) used by the ship tests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = ROOT / "deploy" / "k8s"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def dockerfile_stages(path: Path) -> dict[str, Stage]:
    """The stages of a Dockerfile by name, each with its instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            current = Stage(name.strip(), base.strip())
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


def final_stages(path: Path) -> dict[str, Stage]:
    """The stages nothing else builds on or copies from: the images (build targets)."""
    stages = dockerfile_stages(path)
    used = {stage.base for stage in stages.values()} | {
        match
        for stage in stages.values()
        for keyword, args in stage.instructions
        if keyword == "COPY"
        for match in re.findall(r"--from=(\S+)", args)
    }
    return {name: stage for name, stage in stages.items() if name not in used}


BASE_DOCKERFILE = DOCKER / "base.Dockerfile"
BASE_CONTEXT = "base"  # the named build context the platform images start FROM


def image_dockerfiles() -> dict[str, Path]:
    """The images of docker/ by name, one `<image>.Dockerfile` each (base.Dockerfile is the
    base they are built on, not an image)."""
    return {
        path.name.removesuffix(".Dockerfile"): path
        for path in sorted(DOCKER.glob("*.Dockerfile"))
        if path != BASE_DOCKERFILE
    }


def image_stage(image: str) -> Stage:
    """The one final stage of an image's Dockerfile, named as the image."""
    [stage] = final_stages(image_dockerfiles()[image]).values()
    assert stage.name == image, (image, stage.name)
    return stage


def stage_chain(path: Path, name: str) -> list[Stage]:
    """A stage and the stages it is built on, its own first; `FROM base` goes on in
    base.Dockerfile, as the named build context does."""
    chain, stages = [], dockerfile_stages(path)
    while True:
        if name not in stages and name == BASE_CONTEXT and path != BASE_DOCKERFILE:
            path, stages = BASE_DOCKERFILE, dockerfile_stages(BASE_DOCKERFILE)
        if name not in stages:  # an image of a registry
            return chain
        chain.append(stages[name])
        name = stages[name].base


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def healthcheck_command(stage: Stage) -> list[str]:
    """The command of the HEALTHCHECK a stage has (its own or inherited is not followed)."""
    args = stage.last("HEALTHCHECK")
    assert args is not None, f"stage {stage.name} has no HEALTHCHECK"
    return exec_form(args[args.index("CMD") + len("CMD") :].strip())


COMPOSE = DOCKER / "docker-compose.yml"  # development: builds the images
DEPLOY_COMPOSE = DOCKER / "docker-compose.deploy.yml"  # deployment: pulls the published ones


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def published_images() -> list[str]:
    """The images workflow's matrix: each is published as docker.io/<user>/realty-<image>."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    return workflow["jobs"]["build"]["strategy"]["matrix"]["image"]


def manifests() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.stem != "kustomization":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] not in {"Deployment", "StatefulSet", "Job"}:
        return []
    spec = obj["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def configmap(name: str) -> dict[str, str]:
    [found] = [o for o in manifests() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    return found["data"]
