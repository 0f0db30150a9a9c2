"""A person at the page: Debian's Chromium, headless, driven by Selenium against `edgecvm serve` on a video.

The video shows a lemon for SEGMENT frames, then a school bus, played at its
own frame rate and looped. Through the page's own controls the test teaches
"lemon" by uploading photos and "school bus" by recording frames while the
video shows it, then checks that the page's answer follows the video.
Skips when chromium or chromedriver is not installed (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIP_CONCEPTS, SEGMENT, wait_for
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are not installed")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
RECORD = 12  # frames recorded for the second concept, taken at the start of its segment
FRAME = re.compile(r"#(\d+)")


@pytest.fixture()
def served(test_bundle: Path, clip: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecvm", "serve", "--bundle", str(test_bundle), "--stream", str(clip), "--loop",
         "--realtime", "--state", str(tmp_path / "state"), "--port", "0", "--max-upload-mb", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line, process.stderr.read()  # type: ignore[union-attr]
        yield json.loads(line)["url"], process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1100,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def shown(driver) -> tuple[str, int | None]:
    """The answer on the page and the number of the frame it is about (within the current pass of the video)."""
    concept, frame, _ = answer_on_page(driver)
    return concept, frame


def answer_on_page(driver) -> tuple[str, int | None, str]:
    """The answer, its frame number and the nearest concept's bar, read at once (the page may update between)."""
    concept, frame_text, nearest = driver.execute_script(
        "const bar = document.querySelector('#bars li .name');"
        "return [document.getElementById('answer-concept').textContent,"
        " document.getElementById('answer-frame').textContent, bar ? bar.textContent : ''];")
    match = FRAME.search(frame_text)
    return concept, int(match.group(1)) if match else None, nearest


def test_teach_two_concepts_from_the_page(served, browser, samples_dir: Path, tmp_path: Path):
    url, process = served
    first, second = CLIP_CONCEPTS
    browser.get(url)
    wait_for(lambda: shown(browser)[1] is not None, what="the page's first answer")
    # played in real time, the video's frames arrive as a camera's do: the page says how late each answer is
    assert re.search(r"#\d+ · \d+ ms after it arrived", browser.find_element(By.ID, "answer-frame").text)
    wait_for(lambda: browser.execute_script("return document.getElementById('preview').naturalWidth > 0"),
             what="the preview")
    # typing completes from the server: a few matching names, not the whole vocabulary
    concept = browser.find_element(By.ID, "concept")
    concept.send_keys("LEM")
    options = "return [...document.getElementById('vocabulary').options].map((o) => o.value)"
    wait_for(lambda: "lemon" in browser.execute_script(options), what="the completed concept names")
    assert all("lem" in name.casefold() for name in browser.execute_script(options))

    # a misspelt concept: the page offers the close names, and one click fills the field
    concept.clear()
    concept.send_keys("lemn")
    browser.find_element(By.ID, "record").click()
    wait_for(lambda: "Close names" in browser.find_element(By.ID, "message").text, what="close names")
    browser.find_element(By.XPATH, f"//p[@id='message']/button[text()='{first}']").click()
    assert concept.get_attribute("value") == first

    # the first concept by uploading photos of it, one of them a phone-sized photo larger than the server's
    # 1 MB request limit: the page sends it downscaled
    photos = sorted((samples_dir / "train" / first).iterdir())[:7]
    big = tmp_path / "phone-photo.jpg"
    pixels = np.asarray(Image.open(photos[0]).convert("RGB").resize((3000, 2250)), dtype=np.int16)
    noisy = pixels + np.random.default_rng(0).integers(-12, 13, size=pixels.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(big, quality=95)
    assert big.stat().st_size > 1024 * 1024
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in [*photos, big]))
    browser.find_element(By.ID, "upload").click()
    wait_for(lambda: f"taught 8 image(s) of {first}" in browser.find_element(By.ID, "message").text,
             what="the upload")

    # the second by recording while the video shows it (the page says which frame it is on)
    concept.clear()
    concept.send_keys(second)
    frames = browser.find_element(By.ID, "frames")
    frames.clear()
    frames.send_keys(str(RECORD))
    wait_for(lambda: SEGMENT <= (shown(browser)[1] or 0) < SEGMENT + 4, what=f"the video to show {second}")
    browser.find_element(By.ID, "record").click()
    wait_for(lambda: f"{second} — {RECORD} examples" in browser.find_element(By.ID, "known").text, timeout_s=30,
             what="the recorded examples in the list of known concepts")
    assert f"{first} — 8 examples" in browser.find_element(By.ID, "known").text

    # the answer follows the video: lemon on the first segment, school bus on the second
    answers: dict[int, tuple[str, str]] = {}  # frame -> the page's answer for it and the nearest taught concept

    def sample() -> bool:
        answer, frame, nearest = answer_on_page(browser)
        if frame is not None and 5 <= frame % SEGMENT < SEGMENT - 5:  # clear of the cut between the concepts
            answers[frame] = (answer, nearest)
        return sum(f < SEGMENT for f in answers) >= 10 and sum(f >= SEGMENT for f in answers) >= 10

    wait_for(sample, timeout_s=60, what="answers on both parts of the video")
    browser.save_screenshot(str(tmp_path / "serve-page.png"))
    for truth, frames_of in ((first, range(SEGMENT)), (second, range(SEGMENT, 2 * SEGMENT))):
        # the nearest taught concept follows the video; the answer names it, or says the frame is none of the
        # taught concepts when the calibrated open-set score rejects it
        right = [answers[f][1] == truth for f in frames_of if f in answers]
        assert sum(right) >= 0.8 * len(right), f"{truth}: nearest on {sum(right)} of {len(right)} frames"
        assert all(answer in (nearest, "unknown") for answer, nearest in answers.values())
    if os.environ.get("EDGECVM_SCREENSHOT"):  # where to keep a copy (docs/serve-page.png)
        shutil.copy(tmp_path / "serve-page.png", os.environ["EDGECVM_SCREENSHOT"])

    # SIGTERM checkpoints what the page taught, as `edgecvm learn` does
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    summary = json.loads(out.strip().splitlines()[-1])
    assert process.returncode == 130 and "checkpointed" in err
    assert summary["known"] == [first, second] and summary["saved_update"] == summary["updates_total"]
