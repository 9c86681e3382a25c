"""Property-based requests from the OpenAPI schema (schemathesis) to the price, digits and ops
routes of a real server: whatever is sent, no answer is a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

# The routes of serving.routes.price, .digits and .ops (the vision routes have their own tests).
ROUTES = r"^/(v1/price/|v1/digits/|v1/models$|v1/admin/|predict/$|health$|metrics$)"
EXAMPLES = 25  # per route


def test_no_input_makes_a_server_error(serving_server) -> None:
    # schemathesis' pytest plugin (from_fixture) does not run on pytest 9; its Python API does.
    schema = schemathesis.openapi.from_url(f"{serving_server.url}/openapi.json")
    operations = [result.ok() for result in schema.include(path_regex=ROUTES).get_all_operations()]
    assert len(operations) == 8, [op.label for op in operations]
    server_errors: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case) -> None:
            response = case.call(timeout=60)
            if response.status_code >= 500:
                label = case.operation.label
                server_errors.append(f"{label}: {response.status_code} {response.text}")

        no_server_error()
    assert server_errors == []
