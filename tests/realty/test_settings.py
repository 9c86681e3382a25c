"""Settings that are secrets are masked wherever settings are printed, dumped or logged."""

from __future__ import annotations

import json

import pytest

from realty.settings import SECRET_SETTINGS, Settings

PASSWORD = "s3cret-pass"
TOKEN = "s3cret-token"


@pytest.fixture
def secret_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("REALTY_PG_URL", f"postgresql://realty:{PASSWORD}@db.internal:5432/")
    monkeypatch.setenv("REALTY_SERVING_ADMIN_TOKEN", TOKEN)
    return Settings(home=tmp_path)


def test_secrets_are_masked_in_repr_and_dumps(secret_settings: Settings) -> None:
    for shown in (repr(secret_settings), str(secret_settings), secret_settings.model_dump_json()):
        assert PASSWORD not in shown and TOKEN not in shown
    assert secret_settings.server_url_masked == "postgresql://realty:***@db.internal:5432"
    assert secret_settings.server_url == f"postgresql://realty:{PASSWORD}@db.internal:5432"


def test_public_json_leaves_secrets_out_and_reads_them_back_from_the_environment(
    secret_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = secret_settings.public_json()
    assert PASSWORD not in public and TOKEN not in public
    assert not SECRET_SETTINGS & set(json.loads(public))
    assert Settings.from_public_json(public) == secret_settings
    monkeypatch.delenv("REALTY_SERVING_ADMIN_TOKEN")
    assert Settings.from_public_json(public).serving_admin_token is None


def test_a_url_without_password_is_printed_as_it_is(tmp_path) -> None:
    settings = Settings(home=tmp_path, pg_port=5999)
    assert settings.server_url_masked == settings.server_url == "postgresql://realty@127.0.0.1:5999"
