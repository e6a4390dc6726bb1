"""The page in headless Chromium: a question unmasks on screen, step by step, then the answer stays.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Skipped only outside CI
when no Chromium is found; in CI (env CI set) a missing browser is a failure. The screenshot is written
to ``$DIFFUTRON_ARTIFACTS`` (default: pytest's temp folder; the path is printed); with
``DIFFUTRON_UPDATE_SCREENSHOT=1`` it also replaces docs/serving-page.png.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .helpers import LiveServer, make_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and not os.environ.get("CI"):
    pytest.skip("no chromium + chromedriver here (CI installs them)", allow_module_level=True)

RECORD = """
window.__frames = [];
const box = document.getElementById('messages');
new MutationObserver(() => {
  const a = box.querySelector('.msg.assistant .answer');
  if (a) window.__frames.push({masks: a.querySelectorAll('.mask').length, text: a.textContent});
}).observe(box, {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and DRIVER, "CI must install chromium and chromium-driver (.ci/run)"
    profile = tempfile.mkdtemp(prefix="diffutron-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(serve_model, tokenizer):
    s = LiveServer(make_app(serve_model, tokenizer))
    yield s
    s.close()


def test_a_question_unmasks_live_and_replays(browser, server, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    assert "Diffutron" in browser.title
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.MODEL_ID") == "micro")
    browser.execute_script(RECORD)
    # the sampler fields start at the server's preset, and choosing another preset refills them
    from selenium.webdriver.support.ui import Select

    from diffutron.sampling import PRESETS, SERVER_PRESET

    # (the page's static defaults differ from both presets: only the fill can pass these)
    def shown(field: str) -> str:
        return browser.find_element(By.ID, field).get_attribute("value")

    assert shown("preset") == SERVER_PRESET
    assert shown("remasking") == PRESETS[SERVER_PRESET].remasking != "low_confidence"
    assert int(shown("block_size")) == PRESETS[SERVER_PRESET].block_size != 16
    Select(browser.find_element(By.ID, "preset")).select_by_value("diffutron")
    assert shown("remasking") == PRESETS["diffutron"].remasking
    assert int(shown("steps")) == PRESETS["diffutron"].steps != 32
    for field, value in (("max_tokens", "24"), ("steps", "24"), ("block_size", "8"), ("seed", "1")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "prompt").send_keys("Türkiye'nin başkenti neresidir?")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".msg.assistant").get_attribute("data-state") in ("done", "error")
        )
    )
    answer = browser.find_element(By.CSS_SELECTOR, ".msg.assistant")
    assert answer.get_attribute("data-state") == "done", answer.text
    frames = browser.execute_script("return window.__frames")
    partial = [f for f in frames if f["masks"] > 0]
    assert len({f["masks"] for f in partial}) >= 2  # at least two different intermediate canvases with masks
    assert frames[-1]["masks"] == 0 and answer.find_elements(By.CSS_SELECTOR, ".mask") == []
    assert "forward passes" in answer.find_element(By.CSS_SELECTOR, ".stats").text
    assert "tokens/s" in answer.find_element(By.CSS_SELECTOR, ".stats").text
    # the step slider replays: its first position shows masks again
    browser.execute_script(
        "const s = document.querySelector('.msg.assistant input[type=range]');"
        "s.value = 1; s.dispatchEvent(new Event('input'));"
    )
    assert len(answer.find_elements(By.CSS_SELECTOR, ".mask")) > 0
    browser.execute_script(
        "const s = document.querySelector('.msg.assistant input[type=range]');"
        "s.value = Math.max(2, Math.floor(s.max / 2)); s.dispatchEvent(new Event('input'));"
    )
    out = Path(os.environ.get("DIFFUTRON_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "serving-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"page screenshot: {shot}")
    if os.environ.get("DIFFUTRON_UPDATE_SCREENSHOT"):
        shutil.copy(shot, Path(__file__).resolve().parents[2] / "docs" / "serving-page.png")


def test_infill_mode_fills_the_holes(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return window.MODEL_ID") == "micro")
    browser.find_element(By.CSS_SELECTOR, "input[value=infill]").click()
    browser.find_element(By.ID, "prompt").send_keys("Ankara Türkiye'nin <mask:3> şehridir.")
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 60).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".msg.assistant").get_attribute("data-state") in ("done", "error")
        )
    )
    text = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .answer").text
    assert text.startswith("Ankara Türkiye'nin") and text.endswith("şehridir.")
