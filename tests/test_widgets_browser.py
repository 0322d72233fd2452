"""The steering widget in a real browser: JupyterLab on localhost, Debian's chromium driven by Playwright.

Needs /usr/bin/chromium (Debian package ``chromium``; .ci/run installs it) and the ``playwright`` Python
package. Skipped when chromium is absent unless CLIPWB_REQUIRE_BROWSER=1 (set by CI), where it fails instead.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CLIPWB_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is missing: apt-get install -y chromium (see .ci/run)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": "from clipwb.widgets import demo_from_world\n"
                               "demo_from_world(n=48, steps=40)"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "demo.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), "clipwb-test"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIPWB_HEADLESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 90 s")
    yield url, token
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_moving_the_slider_changes_the_probabilities(jupyterlab):
    from playwright.sync_api import sync_playwright

    url, token = jupyterlab
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/demo.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
        # run the notebook through JupyterLab's own command once its kernel is up; retry if a run was lost
        probs = None
        for _ in range(4):
            page.wait_for_function(
                "() => { const w = window.jupyterapp.shell.currentWidget;"
                " return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                " && w.sessionContext.session.kernel.status === 'idle'; }", timeout=180_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                probs = page.wait_for_selector(".clipwb-probs", timeout=90_000)
                break
            except Exception:  # noqa: BLE001 - lost or slow run: wait for idle again and rerun
                continue
        if probs is None:
            page.screenshot(path=os.environ.get("CLIPWB_SCREENSHOT", "/tmp/clipwb-widget-failure.png"))
            pytest.fail("the widget never showed its probabilities (screenshot: /tmp/clipwb-widget-failure.png)")
        before = probs.inner_text()
        handle = page.wait_for_selector(".widget-slider .noUi-handle", timeout=30_000)
        box = handle.bounding_box()
        track = page.query_selector(".widget-slider .noUi-target").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + 0.95 * track["width"], box["y"] + box["height"] / 2, steps=10)
        page.mouse.up()
        deadline, after = time.time() + 60, before
        while after == before and time.time() < deadline:
            time.sleep(0.5)
            after = page.inner_text(".clipwb-probs")
        readout = page.inner_text(".widget-slider .widget-readout")
        browser.close()
    assert before.strip() and after != before, (before, after)
    assert float(readout) > 1.0
