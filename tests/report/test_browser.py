"""`prectr report`'s page in a real browser: headless Chromium (Debian's ``chromium``, which
``make test`` installs where it is missing) renders every table and figure with no console
error, for runs on a simulated world and for runs on a plain log. A screenshot of each page
is kept in ``runs/screenshots/`` (``PRECTR_SCREENSHOTS`` to put them elsewhere)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from prectr.evaluation import evaluate_run
from prectr.report import write_report
from tests.conftest import tiny_config
from tests.own_log import own_log

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Chromium on a closed network: no background connections, no sandbox as root (the machine's
#: notes, /work/.library/env).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
SCREENSHOTS = Path(os.environ.get("PRECTR_SCREENSHOTS", Path(__file__).parents[2] / "runs" /
                                  "screenshots"))  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
        pytest.skip("no chromium on this machine (`make test` installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def rendered(browser, page_path: Path, name: str) -> dict:
    """Open ``page_path`` and return what the browser rendered: console errors, every table's
    body rows, every image's natural size, the section headings; keep a screenshot."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.resolve().as_uri())
    page.wait_for_load_state("load")
    seen = page.evaluate(
        """() => ({
            tables: [...document.querySelectorAll('table')]
                .map(t => t.querySelectorAll('td').length),
            images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
            headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
        })"""
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    page.close()
    return {"errors": errors, **seen}


def assert_complete(seen: dict, html: str) -> None:
    assert seen["errors"] == []
    assert len(seen["tables"]) == html.count("<table>") and all(seen["tables"])
    assert len(seen["images"]) == html.count("<img") > 0
    assert all(complete and w > 100 and h > 100 for complete, w, h in seen["images"])


def test_the_report_of_runs_on_a_world_renders_in_chromium(browser, tiny_world, tiny_run, tmp_path):
    evaluate_run(tiny_run, tiny_world, n_resamples=20)
    page = write_report([tiny_run], tmp_path / "world.html")
    seen = rendered(browser, page, "report_world")
    assert_complete(seen, page.read_text())
    assert {"Metrics", "Calibration", "Slices", "Online proxy"} <= set(seen["headings"])
    assert (SCREENSHOTS / "report_world.png").stat().st_size > 10_000


def test_the_report_of_a_plain_log_renders_in_chromium(browser, tmp_path):
    from prectr.train.trainer import Trainer

    log = own_log(tmp_path / "log", requests=1500)
    run = tmp_path / "run"
    Trainer(tiny_config(log, {"test_days": 2}), run).fit()
    evaluate_run(run, n_resamples=20)
    page = write_report([run], tmp_path / "log.html")
    seen = rendered(browser, page, "report_plain_log")
    assert_complete(seen, page.read_text())
    assert "What was measured" in seen["headings"]
    assert (SCREENSHOTS / "report_plain_log.png").stat().st_size > 10_000
