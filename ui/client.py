"""HTTP clients of the web app: the serving API (models, vision, batch history) and MLflow's REST
API (the price model's versions and their SHAP artifacts). The web app reaches nothing else.

Every failure becomes a ``BackendError`` whose message is a plain sentence a person can act on;
the tabs show it instead of a stack trace.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PRODUCTION = "production"


class BackendError(RuntimeError):
    """A backend could not answer; ``str(error)`` says so in plain words. ``status`` is the
    HTTP status of the answer, None when there was none."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _detail(response: httpx.Response) -> str:
    """The message a JSON error answer carries (FastAPI's ``detail``, MLflow's ``message``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("message", body))
        if isinstance(detail, list):  # pydantic validation errors
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                for item in detail
                if isinstance(item, dict)
            )
        return str(detail)
    return str(body)


class _Http:
    """One backend at ``base_url``; ``name`` is what the messages call it."""

    def __init__(self, name: str, base_url: str, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise BackendError(
                f"The {self.name} at {self.base_url} did not answer in time; try again shortly."
            ) from error
        except httpx.HTTPError as error:
            raise BackendError(
                f"The {self.name} at {self.base_url} is not reachable right now "
                "(is the stack running? `realty up` starts it). The other tabs keep working."
            ) from error
        status = response.status_code
        if status == 503:
            raise BackendError(f"The {self.name} is not ready: {_detail(response)}", status)
        if status >= 500:
            raise BackendError(f"The {self.name} failed ({status}): {_detail(response)}", status)
        if status >= 400:
            raise BackendError(f"The {self.name} refused the request: {_detail(response)}", status)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as error:
            raise BackendError(f"The {self.name} answered something that is not JSON.") from error

    def close(self) -> None:
        self.http.close()


class ServingClient:
    """The serving API (``serving/``)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self._http = _Http("serving API", base_url, timeout_s)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def predict_price(self, listing: dict[str, Any]) -> dict[str, Any]:
        """``{"request_id", "model": {"name", "version"}, "predictions": [{"price"}]}``."""
        return self._http.json("POST", "/v1/price/predict", json={"listings": [listing]})

    def explain_price(self, listing: dict[str, Any]) -> dict[str, Any]:
        """The price of one listing and each feature's SHAP contribution to it."""
        return self._http.json("POST", "/v1/price/explain", json={"listing": listing})

    def models(self) -> dict[str, Any]:
        return self._http.json("GET", "/v1/models")

    def rollout(self) -> dict[str, Any]:
        """The price model's rollout: state, the step's figures per arm, the recorded moves."""
        return self._http.json("GET", "/v1/rollout")

    def batches(self) -> list[dict[str, Any]]:
        return self._http.json("GET", "/v1/batches")["batches"]

    def monitoring(self, hours: int) -> dict[str, Any]:
        """The price model's served windows of the last ``hours`` and the newest alerts."""
        return self._http.json("GET", f"/v1/monitoring?hours={hours}")

    def count(
        self, image: bytes, model: str, confidence: float, object_name: str | None
    ) -> dict[str, Any]:
        data = {"model": model, "confidence": str(confidence)}
        if object_name:
            data["object"] = object_name
        return self._http.json("POST", "/v1/count", data=data, files=_upload(image))

    def detect(self, image: bytes, model: str, confidence: float) -> bytes:
        """The annotated JPEG."""
        data = {"model": model, "confidence": str(confidence)}
        return self._http.request("POST", "/v1/detect", data=data, files=_upload(image)).content

    def predict_digit(self, image: bytes) -> dict[str, Any]:
        """``{"request_id", "prediction", "model": {"name", "version"}}`` for an image file."""
        payload = {"request_id": str(uuid.uuid4()), "image": base64.b64encode(image).decode()}
        return self._http.json("POST", "/v1/digits/predict", json=payload)

    def close(self) -> None:
        self._http.close()


def _upload(image: bytes) -> dict[str, tuple[str, bytes, str]]:
    # serving sniffs the type from the bytes; the name is only a label
    return {"file": ("upload", image, "application/octet-stream")}


@dataclass(frozen=True)
class ModelVersion:
    """One registered version as MLflow's REST API describes it."""

    version: str
    created_ms: int
    run_id: str
    description: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def metrics(self) -> dict[str, float]:
        prefix = "metric."
        return {
            k.removeprefix(prefix): float(v) for k, v in self.tags.items() if k.startswith(prefix)
        }

    @property
    def reasons(self) -> list[str]:
        try:
            reasons = json.loads(self.tags.get("reasons", "[]"))
        except ValueError:
            return [self.tags["reasons"]]
        return [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)]


class RegistryClient:
    """MLflow's REST API: registered versions of a model and their run's artifacts."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self._http = _Http("MLflow server", base_url, timeout_s)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first (empty when the model is not registered)."""
        aliases = self._aliases(name)
        found: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"filter": f"name='{name}'", "max_results": 200}
            if token:
                params["page_token"] = token
            page = self._http.json("GET", "/api/2.0/mlflow/model-versions/search", params=params)
            found += page.get("model_versions", [])
            token = page.get("next_page_token")
            if not token:
                break
        versions = [_version(item, aliases) for item in found]
        return sorted(versions, key=lambda v: v.number, reverse=True)

    def _aliases(self, name: str) -> dict[str, list[str]]:
        """Version → its aliases."""
        try:
            model = self._http.json(
                "GET", "/api/2.0/mlflow/registered-models/get", params={"name": name}
            )["registered_model"]
        except BackendError as error:
            if error.status == 404:  # no version registered yet
                return {}
            raise
        by_version: dict[str, list[str]] = {}
        for item in model.get("aliases", []):
            by_version.setdefault(item["version"], []).append(item["alias"])
        return by_version

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """A file the run logged, or None when the run has no such file."""
        try:
            response = self._http.request(
                "GET", "/get-artifact", params={"run_uuid": run_id, "path": path}
            )
        except BackendError as error:
            if error.status == 404:  # the run logged no such file
                return None
            raise
        return response.content

    def close(self) -> None:
        self._http.close()


def _version(item: dict[str, Any], aliases: dict[str, list[str]]) -> ModelVersion:
    version = str(item["version"])
    return ModelVersion(
        version=version,
        created_ms=int(item.get("creation_timestamp", 0)),
        run_id=item.get("run_id", ""),
        description=item.get("description", ""),
        tags={t["key"]: t.get("value", "") for t in item.get("tags", [])},
        aliases=tuple(sorted(set(item.get("aliases", [])) | set(aliases.get(version, [])))),
    )
