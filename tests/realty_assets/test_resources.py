"""Secrets never reach what the Dagster UI shows: resource config holds the variable's name."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from realty.settings import Settings
from realty_assets.resources import PG_URL_VARIABLE, build_resources

PASSWORD = "hunter2-not-in-the-ui"
TOKEN = "admin-token-not-in-the-ui"


def ui_view(resources: dict[str, dg.ConfigurableResource]) -> str:
    """The repository snapshot the webserver serves to the UI, resources' config included."""
    definitions = dg.Definitions(resources=resources)
    return serialize_value(RepositorySnap.from_def(definitions.get_repository_def()))


def test_secrets_are_env_vars_in_resource_config_and_still_connect(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded server trusts 127.0.0.1, so a URL with a password still connects to it.
    url = f"postgresql://{pg_settings.pg_user}:{PASSWORD}@{pg_settings.host}:{pg_settings.pg_port}"
    monkeypatch.setenv(PG_URL_VARIABLE, url)
    monkeypatch.setenv("REALTY_SERVING_ADMIN_TOKEN", TOKEN)
    settings = Settings(home=pg_settings.home)
    resources = build_resources(settings)

    shown = ui_view(resources)
    assert PASSWORD not in shown and TOKEN not in shown
    assert PG_URL_VARIABLE in shown  # the variable's name is what the UI shows

    # Resolved from the environment where it runs, the resource reaches the database, and the
    # settings the MLflow resource carries get their secrets back from the same environment.
    with dg.build_resources(resources) as built:
        with built.postgres.connect("raw_data") as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert built.mlflow.settings.server_url == url
        assert built.mlflow.settings.serving_admin_token.get_secret_value() == TOKEN


def test_a_password_that_is_not_in_the_environment_is_refused(tmp_path) -> None:
    settings = Settings(home=tmp_path, pg_url=f"postgresql://realty:{PASSWORD}@db:5432")
    with pytest.raises(ValueError, match=PG_URL_VARIABLE):
        build_resources(settings)


def test_the_embedded_server_needs_no_variable(pg_settings: Settings) -> None:
    assert build_resources(pg_settings)["postgres"].server_url == pg_settings.server_url
