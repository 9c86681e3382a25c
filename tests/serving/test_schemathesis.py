"""Property-based requests from the OpenAPI schema (schemathesis) to the price, digits and ops
routes of a real server: whatever is sent, no answer is a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

# The routes of serving.routes.price, .digits and .ops (the vision routes have their own tests).
ROUTES = r"^/(v1/price/|v1/digits/|v1/models$|v1/admin/|predict/$|health$|metrics$)"


@pytest.fixture
def serving_schema(serving_server):
    schema = schemathesis.openapi.from_url(f"{serving_server.url}/openapi.json")
    return schema.include(path_regex=ROUTES)


schema = schemathesis.pytest.from_fixture("serving_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_server_error(case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
