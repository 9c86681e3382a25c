"""Operations routes of the serving API, against real uvicorn, MLflow and PostgreSQL."""

from __future__ import annotations

import httpx


def test_health_answers(serving_server) -> None:
    response = httpx.get(f"{serving_server.url}/health")
    assert response.status_code == 200
