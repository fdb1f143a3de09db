"""Browser fixtures: the real app served by uvicorn in a thread on a free port, over a ledger with a real
anvil chain (``chain_api``), driven by Debian's Chromium through Playwright.

Why Debian's Chromium and not ``playwright install``: the browser download needs the internet and an
unpinned binary; ``/usr/bin/chromium`` comes from ``make setup`` (apt). Screenshots go to a pytest tmp
directory (artifacts, never committed); the path is printed at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from sqlalchemy import Engine

from mrledger.store import make_engine, migrate
from tests.harness import Api, chain_api, serve_in_thread

__all__ = ["chain_api"]  # re-exported fixture: the real-anvil ledger of the API tests

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync"]
AXE = Path(__file__).parents[3] / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """SQLite only: the pages do not depend on the database, and each browser test is slow enough."""
    eng = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


@dataclass
class Served:
    api: Api
    url: str


@pytest.fixture
def served(chain_api: Api) -> Iterator[Served]:
    """The app over the chain ledger, on 127.0.0.1 (WebCrypto needs a secure context: localhost counts)."""
    with serve_in_thread(chain_api.client.app) as url:  # the app ``Api.rebuild`` rewires
        yield Served(chain_api, url)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'make setup' (installs Debian's chromium)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # launch() gives every run a fresh temporary profile (Playwright refuses a --user-data-dir here).
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go (a pytest tmp dir: artifacts, not committed)."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context per test, English UI; ``bypass_csp`` only so axe-core can be injected."""
    context = browser.new_context(locale="en-GB", bypass_csp=True, viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
