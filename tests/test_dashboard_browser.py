"""
The dashboard in a real browser: headless Chromium (Debian's ``chromium``
and ``chromium-driver``, which ``.ci/run`` installs) against a real
``twistd -n commandserver --dashboard ...`` under traffic.  Loopback only;
the traffic and every wait are bounded in count and time.

Set ``DASHBOARD_SCREENSHOT=PATH`` to save the page as a PNG there (how
``docs/dashboard.png`` is made).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from twisted.trial.unittest import SkipTest

from commandproto.commands.table import GREETING

from ._processes import IO_TIMEOUT, ServerProcess, read_exactly
from .test_integration import ProcessTestCase

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

DASHBOARD = re.compile(r"dashboard on tcp:127\.0\.0\.1:(\d+) at /")
CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
TRAFFIC_PERIOD = 0.05
TRAFFIC_LIMIT = 2000
T = TypeVar("T")


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
        )
        if found:
            return found
    return None


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """
    Poll ``probe`` until it returns something true, or fail saying ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Traffic:
    """
    ``Hello`` from one client every :data:`TRAFFIC_PERIOD` seconds, at most
    :data:`TRAFFIC_LIMIT` times, until stopped.
    """

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._stop = threading.Event()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._server.connect() as sock:
            while self.sent < TRAFFIC_LIMIT and not self._stop.wait(TRAFFIC_PERIOD):
                sock.sendall(b"Hello\n")
                read_exactly(sock, len(GREETING) + 2)
                self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)


class BrowserTests(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        chromium, driver = _find(CHROMIUM), _find((CHROMEDRIVER,))
        if chromium is None or driver is None:
            raise SkipTest(
                "needs Chromium and its driver (apt-get install chromium "
                "chromium-driver; .ci/run installs them)"
            )
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in FLAGS:
            options.add_argument(flag)
        profile = tempfile.mkdtemp(prefix="commandproto-chromium-")
        self.addCleanup(shutil.rmtree, profile, ignore_errors=True)
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.browser: WebDriver = webdriver.Chrome(
            options=options, service=Service(executable_path=driver)
        )
        self.addCleanup(self.browser.quit)
        self.browser.set_page_load_timeout(IO_TIMEOUT)

    def start_dashboard(self, *options: str) -> tuple[ServerProcess, int]:
        server = self.start_server("--dashboard", "tcp:0:interface=127.0.0.1", *options)
        line = server.wait_for_log(DASHBOARD)
        match = DASHBOARD.search(line)
        assert match is not None
        return server, int(match.group(1))

    def counter(self, key: str) -> int | None:
        from selenium.webdriver.common.by import By

        cells = self.browser.find_elements(By.CSS_SELECTOR, f'[data-key="{key}"]')
        text = cells[0].text if cells else ""
        return int(text) if text.isdigit() else None

    def test_live_counters_and_console(self) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        server, port = self.start_dashboard("--dashboard-token", "s3cret")
        traffic = Traffic(server)
        self.addCleanup(traffic.stop)
        self.browser.get(f"http://127.0.0.1:{port}/?token=s3cret")

        # The counters move on their own: no reload.
        first = wait_for("the commands counter", lambda: self.counter("commands"))
        wait_for(
            "the commands counter to move",
            lambda: (self.counter("commands") or 0) > first + 5,
        )
        self.assertIsNotNone(self.counter("connections_total"))

        # The console is a connection of the server.
        field = self.browser.find_element(By.ID, "console-input")
        field.send_keys("Hello", Keys.ENTER)
        output = self.browser.find_element(By.ID, "console-output")
        wait_for("Greetings! in the console", lambda: GREETING in output.text)
        self.assertIn("> Hello", output.text)
        server.wait_for_log(re.compile(r"connection from ws:127\.0\.0\.1:\d+"))

        # History: the up arrow brings back the last line.
        field.send_keys(Keys.ARROW_UP)
        self.assertEqual(field.get_attribute("value"), "Hello")
        field.clear()

        # Charts drawn by uPlot, one per topic.
        wait_for(
            "four charts",
            lambda: len(self.browser.find_elements(By.CSS_SELECTOR, ".uplot")) == 4,
        )
        screenshot = os.environ.get("DASHBOARD_SCREENSHOT")
        if screenshot:
            time.sleep(20)  # some history in the charts
            self.browser.set_window_size(1280, 1180)
            self.browser.execute_script("window.scrollTo(0, 0)")
            time.sleep(2)
            self.browser.save_screenshot(screenshot)
        traffic.stop()
        errors = [
            entry
            for entry in self.browser.get_log("browser")  # type: ignore[attr-defined]
            if entry["level"] == "SEVERE"
        ]
        self.assertEqual(errors, [])

    def test_page_without_its_token_is_refused(self) -> None:
        _, port = self.start_dashboard("--dashboard-token", "s3cret")
        self.browser.get(f"http://127.0.0.1:{port}/")
        self.assertIn("Unauthorized", self.browser.page_source)
