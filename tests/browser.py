"""Headless Chromium for the page tests: Debian's, driven by Playwright, which never downloads a browser."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

# Installed by the Makefile's test prerequisites (Debian packages chromium and chromium-driver).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 20_000


@asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), "run the tests with `make test`: it installs Debian's chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


def served_at(origin_host_port: str, address: str) -> str:
    """A Chromium flag that sends `origin_host_port` (e.g. `localhost:5173`) to a server listening at
    `address`: the page has the origin it names, and no fixed port has to be free."""
    return f"--host-resolver-rules=MAP {origin_host_port} {address}"


def track_errors(page: Page) -> list[str]:
    """The page's uncaught errors and console errors, collected as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("console", console)
    return errors
