"""The sandbox's helpers that other tests and the benchmarks build on."""

from __future__ import annotations

from pathlib import Path

import pytest

from realty.settings import Settings
from realty_ops.sandbox import settings_env


def test_a_child_recreates_the_settings_secrets_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets as themselves, not their masks: a child given ``**********`` as its PostgreSQL
    URL cannot connect."""
    settings = Settings(home=tmp_path, pg_url="postgresql://u:pw@db:5432", serving_admin_token="t")
    env = settings_env(settings)
    assert env["REALTY_PG_URL"] == "postgresql://u:pw@db:5432"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
