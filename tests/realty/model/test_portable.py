"""The registered price model is portable: `mlflow models serve` in a fresh venv holding only
the model's requirements (no realty, no checkout on sys.path) loads it from the test MLflow
server and predicts what the in-process model predicts; processes with realty installed keep
using their installed copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from realty.model import registry
from realty.model.portable import module_closure
from realty.model.price_model import PriceModel, client_example
from realty.settings import REPO_ROOT
from realty_ops.sandbox import START_TIMEOUT_S, free_port
from realty_ops.stack import http_ok

UV = REPO_ROOT / ".tools" / "bin" / "uv"


def test_the_model_ships_the_realty_modules_it_imports(production_models) -> None:
    uri = f"models:/{production_models.settings.price_model_name}/{production_models.price_version}"
    local = Path(mlflow.artifacts.download_artifacts(f"{uri}/code"))
    shipped = {
        ".".join(path.relative_to(local).with_suffix("").parts).removesuffix(".__init__")
        for path in local.rglob("*.py")
    }
    assert shipped == module_closure()
    assert {"realty.model.price_model", "realty.model.features", "realty.schema"} <= shipped
    assert not any(name.startswith(("realty.store", "realty.ingest")) for name in shipped)


def test_a_process_with_realty_installed_keeps_its_own_copy(production_models) -> None:
    settings = production_models.settings
    registry.load_price_model.cache_clear()
    model = registry.load_price_model(settings.price_model_name, production_models.price_version)
    assert type(model) is PriceModel  # the installed class, not one imported from code/
    assert Path(sys.modules["realty.model.features"].__file__).is_relative_to(REPO_ROOT)


@pytest.fixture(scope="module")
def bare_python(production_models, tmp_path_factory) -> Path:
    """A fresh venv with the registered model's requirements.txt only (from uv's cache)."""
    uri = f"models:/{production_models.settings.price_model_name}/{production_models.price_version}"
    requirements = mlflow.pyfunc.get_model_dependencies(uri)
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, venv], check=True)
    python = venv / "bin" / "python"
    install = [UV, "pip", "install", "-q", "--python", python, "-r", requirements]
    subprocess.run(install, check=True, timeout=600)
    return python


def test_mlflow_models_serve_predicts_without_realty(production_models, bare_python, tmp_path):
    settings = production_models.settings
    uri = f"models:/{settings.price_model_name}/{production_models.price_version}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"MLFLOW_TRACKING_URI": settings.mlflow_url, "PATH": f"{bare_python.parent}:/bin"}
    no_realty = "import importlib.util as u, sys; sys.exit(u.find_spec('realty') is not None)"
    subprocess.run([bare_python, "-c", no_realty], check=True, cwd=tmp_path, env=env)

    listings = client_example(production_models.listings.sample(50, random_state=5))
    body = {"dataframe_records": listings.to_dict("records")}
    with _models_serve(bare_python, uri, env, tmp_path) as url:
        response = httpx.post(f"{url}/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served = np.asarray(response.json()["predictions"], dtype="float64")
    expected = mlflow.pyfunc.load_model(uri).predict(listings)
    assert served.shape == (50,)
    np.testing.assert_allclose(served, expected, rtol=1e-9)


@contextmanager
def _models_serve(python: Path, uri: str, env: dict, cwd: Path) -> Iterator[str]:
    """`mlflow models serve` of ``uri`` until the block ends; its own process group, as it
    starts uvicorn in a child process."""
    serve = [python, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    port, log_file = free_port(), cwd / "serve.log"
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [*serve, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not http_ok(f"{url}/ping"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mlflow models serve did not start:\n{log_file.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
