"""The web app served for real (Gradio on a free port) and a real headless Chromium to drive it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from realty.settings import REPO_ROOT, Settings
from realty_ops.sandbox import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """Debian's Chromium, headless, driven by Playwright (`make test` installs it)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator:
    """A fresh page; its screenshot lands in var/test-artifacts/<test name>.png at the end."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture
def start_ui() -> Iterator[Callable[[Settings], str]]:
    """Serve the web app for ``settings`` on a free port; returns its URL. Closed after the test."""
    from ui.app import launch

    apps = []

    def start(settings: Settings) -> str:
        settings = settings.model_copy(update={"ui_port": free_port()})
        apps.append(launch(settings, block=False))
        return settings.ui_url

    yield start
    for app in apps:
        app.close()


def dead_url() -> str:
    """A loopback URL nothing listens on: a stopped backend."""
    return f"http://127.0.0.1:{free_port()}"
