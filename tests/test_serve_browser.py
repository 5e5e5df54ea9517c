"""The web page of ``lama-fast serve`` in a real browser: headless Chromium driven by Selenium.

A real server on a loopback port with the tiny checkpoint; the page is used as a person would
(file input, pointer strokes, buttons, keyboard) and read back through its ``window.lamaFast`` hooks.
Needs ``selenium`` and Debian's chromium + chromedriver: skipped without them, except under CI=true.

With LAMA_FAST_SCREENSHOTS=<folder> the first test saves serve_before.png and serve_after.png there.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import httpx
import numpy as np
import pytest
from PIL import Image

from servers import start_server

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "tests" / "golden" / "tiny" / "checkpoint.ckpt"
ASTRONAUT = ROOT / "lama_fast" / "assets" / "astronaut.jpg"
VIEWPORT = (1280, 800)
WAIT_S = 60  # bound on every wait for the page (a Remove on the tiny model takes well under a second)

# A stroke across the astronaut's helmet and one across the flag, as fractions of the shown image.
STROKE_1 = [(0.30, 0.30), (0.40, 0.34), (0.50, 0.40), (0.58, 0.48), (0.62, 0.55)]
STROKE_2 = [(0.12, 0.75), (0.20, 0.80), (0.28, 0.84)]

# Reads a Blob the page holds (maskPNG(), lastMaskSent, resultBlob) as base64; null when there is none.
READ_BLOB_JS = """
const [what, done] = [arguments[0], arguments[arguments.length - 1]];
const hooks = window.lamaFast;
Promise.resolve(what === "maskPNG" ? hooks.maskPNG() : hooks[what])
  .then(async (blob) => {
    if (!blob) return done(null);
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    done({type: blob.type, data: btoa(text)});
  })
  .catch((err) => done({error: String(err)}));
"""
RESULT_PIXELS_JS = """
const done = arguments[arguments.length - 1];
window.lamaFast.resultPixels().then(done, (err) => done({error: String(err)}));
"""


def _unavailable(reason: str) -> None:
    """Skip for lack of a browser, but fail under CI, which must run these tests."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser test cannot run: {reason}")
    pytest.skip(reason)


def _find(candidates: Sequence[str]) -> Optional[str]:
    for name in candidates:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        _unavailable(f"selenium is not importable: {error}")
    chromium = _find(["/usr/bin/chromium", "chromium", "chromium-browser"])
    chromedriver = _find(["/usr/bin/chromedriver", "chromedriver"])
    if chromium is None or chromedriver is None:
        _unavailable(f"no chromium ({chromium}) or chromedriver ({chromedriver}) found")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
        browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        # The page's viewport is exactly 1280x800 (the window's frame would take part of it otherwise).
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        browser.set_script_timeout(WAIT_S)
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    running = start_server("--checkpoint", str(CKPT))
    yield running
    running.stop()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 320x240 photo-like PNG: the astronaut picture, cropped and scaled down."""
    with Image.open(ASTRONAUT) as image:
        picture = image.convert("RGB").crop((0, 64, 512, 448)).resize((320, 240), Image.LANCZOS)
    path = tmp_path / "astronaut.png"
    picture.save(path)
    return path


# --- page helpers ---------------------------------------------------------------------------------

def hooks(driver: Any, expression: str) -> Any:
    return driver.execute_script(f"return window.lamaFast.{expression};")


def wait_until(driver: Any, script: str, what: str, timeout: float = WAIT_S) -> Any:
    """Poll a JavaScript expression until it is truthy; fail with the page's state after ``timeout`` s."""
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))
    except TimeoutException:
        state = driver.execute_script("return window.lamaFast && [lamaFast.state, lamaFast.lastError];")
        status = driver.execute_script("return document.getElementById('status').textContent;")
        pytest.fail(f"page never got to {what} in {timeout} s; state and error {state}, status {status!r}")


def open_page(driver: Any, url: str) -> None:
    """Load the page afresh (through about:blank: a URL that differs only by its fragment would not reload)."""
    driver.get("about:blank")
    driver.get(url)
    wait_until(driver, "return window.lamaFast && window.lamaFast.state === 'empty';", "its empty state")


def load_image(driver: Any, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file-input").send_keys(str(path))
    wait_until(driver, "return window.lamaFast.state === 'ready';", f"the ready state after loading {path.name}")


def canvas_point(driver: Any, fx: float, fy: float) -> Tuple[int, int]:
    """Viewport coordinates of a point given as fractions of the canvas's shown size."""
    rect = driver.execute_script("return document.getElementById('canvas').getBoundingClientRect().toJSON();")
    return round(rect["left"] + fx * rect["width"]), round(rect["top"] + fy * rect["height"])


def paint(driver: Any, points: List[Tuple[float, float]], kind: str = "mouse") -> None:
    """Press, move through ``points`` (fractions of the canvas) and release, with a mouse or a finger."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.action_chains import ActionChains

    xy = [canvas_point(driver, fx, fy) for fx, fy in points]
    if kind == "mouse":
        chain = ActionChains(driver, duration=20)
        pointer = chain.w3c_actions.pointer_action
    else:
        builder = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"), duration=20)
        pointer = builder.pointer_action
    pointer.move_to_location(*xy[0])
    pointer.pointer_down()
    for x, y in xy[1:]:
        pointer.move_to_location(x, y)
    pointer.pointer_up()
    (chain if kind == "mouse" else builder).perform()


def press(driver: Any, *keys: str) -> None:
    """A key chord: all keys down in order, then up in reverse."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for key in keys[:-1]:
        chain.key_down(key)
    chain.send_keys(keys[-1])
    for key in reversed(keys[:-1]):
        chain.key_up(key)
    chain.perform()


def click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def read_blob(driver: Any, what: str) -> Optional[Tuple[str, bytes]]:
    """(type, bytes) of a Blob the page holds: "maskPNG" (made now), "lastMaskSent" or "resultBlob"."""
    answer = driver.execute_async_script(READ_BLOB_JS, what)
    if answer is None:
        return None
    assert "error" not in answer, answer
    return answer["type"], base64.b64decode(answer["data"])


def result_pixels(driver: Any) -> np.ndarray:
    """The shown result's RGBA pixels, as the page reads them back from a canvas at full size."""
    answer = driver.execute_async_script(RESULT_PIXELS_JS)
    assert answer is not None and "error" not in answer, answer
    return np.asarray(answer["data"], dtype=np.uint8).reshape(answer["height"], answer["width"], 4)


def hole_of(mask_png: bytes, size: Tuple[int, int]) -> np.ndarray:
    """The hole of a mask the page made, checked to be binary (0 or 255 on every channel) and of ``size``."""
    with Image.open(io.BytesIO(mask_png)) as image:
        assert image.format == "PNG" and image.size == size, (image.format, image.size)
        values = np.asarray(image.convert("RGBA"))
    assert set(np.unique(values[..., :3]).tolist()) <= {0, 255}
    assert (values[..., 3] == 255).all()
    assert (values[..., 0] == values[..., 1]).all() and (values[..., 1] == values[..., 2]).all()
    return values[..., 0] == 255


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def api_inpaint(url: str, image: bytes, mask: bytes, key: Optional[str] = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/inpaint", files={"image": ("image.png", image, "image/png"),
                                                   "mask": ("mask.png", mask, "image/png")},
                      headers=headers, timeout=WAIT_S)


def remove_and_wait(driver: Any) -> None:
    """Click Remove and wait until a new answer is shown (state "done" with another resultBlob)."""
    driver.execute_script("window.__previousResult = window.lamaFast.resultBlob;")
    click(driver, "remove")
    wait_until(driver, "return lamaFast.state === 'done' && lamaFast.resultBlob !== window.__previousResult;",
               "a new result")


def screenshot(driver: Any, name: str) -> None:
    folder = os.environ.get("LAMA_FAST_SCREENSHOTS")
    if not folder:
        return
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(path))
    with Image.open(path) as image:
        assert image.size == VIEWPORT, image.size


def wait_for_file(path: Path, timeout: float = 20) -> bytes:
    """The bytes of a download once the browser has finished writing it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        partial = list(path.parent.glob("*.crdownload"))
        if path.is_file() and not partial:
            return path.read_bytes()
        time.sleep(0.05)
    pytest.fail(f"{path.name} was not downloaded in {timeout} s; the folder has {sorted(os.listdir(path.parent))}")


# --- tests ------------------------------------------------------------------------------------------

def test_paint_remove_compare_download(driver: Any, server: Any, photo: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(driver, server.url + "/")
    wait_until(driver, "return lamaFast.config !== null;", "the server's config")
    assert hooks(driver, "config")["auth"] is False
    assert driver.find_element(By.ID, "remove").get_attribute("disabled") is not None
    load_image(driver, photo)
    source = np.asarray(Image.open(photo).convert("RGB"))

    # A stroke paints the mask at full resolution; undo and redo (keyboard) take it away and back.
    paint(driver, STROKE_1)
    painted = hole_of(read_blob(driver, "maskPNG")[1], (320, 240))
    assert 0.005 < painted.mean() < 0.3, painted.mean()
    mid_x, mid_y = STROKE_1[2]
    assert painted[int(mid_y * 240), int(mid_x * 320)] and not painted[5, 5]
    press(driver, Keys.CONTROL, "z")
    assert not hole_of(read_blob(driver, "maskPNG")[1], (320, 240)).any()
    assert driver.find_element(By.ID, "remove").get_attribute("disabled") is not None
    press(driver, Keys.CONTROL, Keys.SHIFT, "z")
    assert np.array_equal(hole_of(read_blob(driver, "maskPNG")[1], (320, 240)), painted)
    screenshot(driver, "serve_before.png")

    # Remove: the page shows the answer, which changes the photo inside the mask sent and nowhere else.
    remove_and_wait(driver)
    mask_sent = read_blob(driver, "lastMaskSent")[1]
    hole = hole_of(mask_sent, (320, 240))
    assert np.array_equal(hole, painted)
    shown = result_pixels(driver)
    assert (shown[..., 3] == 255).all()
    changed = (shown[..., :3] != source).any(axis=2)
    assert not changed[~hole].any(), f"{int(changed[~hole].sum())} pixels changed outside the mask"
    assert changed[hole].mean() > 0.8, changed[hole].mean()
    # ... and is what the API answers for the same image and mask.
    answer_type, answer = read_blob(driver, "resultBlob")
    assert answer_type == "image/png"
    api = api_inpaint(server.url, photo.read_bytes(), mask_sent)
    assert api.status_code == 200 and api.headers["content-type"] == "image/png"
    assert np.array_equal(rgb(api.content), shown[..., :3])
    assert np.array_equal(rgb(answer), shown[..., :3])
    # The comparison is up: the divider shows, the mask is cleared for the next round.
    assert driver.find_element(By.ID, "split").is_displayed()
    assert driver.find_element(By.ID, "compare").get_attribute("aria-pressed") == "true"
    assert not hole_of(read_blob(driver, "maskPNG")[1], (320, 240)).any()
    assert "Done" in driver.find_element(By.ID, "status").text
    screenshot(driver, "serve_after.png")

    # Download saves the exact bytes of the answer under <stem>_inpainted.<ext>.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    click(driver, "download")
    assert wait_for_file(tmp_path / "astronaut_inpainted.png") == answer

    # A second round paints on the result: what is sent is the first answer's bytes.
    paint(driver, STROKE_2)
    assert driver.find_element(By.ID, "compare").get_attribute("aria-pressed") == "false"
    remove_and_wait(driver)
    hole_2 = hole_of(read_blob(driver, "lastMaskSent")[1], (320, 240))
    assert hole_2.any() and not (hole_2 & hole).any()
    second = result_pixels(driver)
    changed_2 = (second[..., :3] != shown[..., :3]).any(axis=2)
    assert not changed_2[~hole_2].any() and changed_2[hole_2].mean() > 0.8
    api_2 = api_inpaint(server.url, answer, read_blob(driver, "lastMaskSent")[1])
    assert np.array_equal(rgb(api_2.content), second[..., :3])

    # Undo steps back to the first result with the second mask painted again; redo returns.
    click(driver, "undo")
    assert np.array_equal(result_pixels(driver), shown)
    assert np.array_equal(hole_of(read_blob(driver, "maskPNG")[1], (320, 240)), hole_2)
    press(driver, Keys.CONTROL, "y")
    assert np.array_equal(result_pixels(driver), second)


def test_error_is_shown_in_words(driver: Any, server: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5).save(tiny)
    open_page(driver, server.url + "/")
    load_image(driver, tiny)
    paint(driver, [(0.3, 0.4), (0.6, 0.5)], kind="touch")
    click(driver, "remove")
    wait_until(driver, "return lamaFast.state === 'error';", "the error state")
    refused = api_inpaint(server.url, tiny.read_bytes(), read_blob(driver, "lastMaskSent")[1])
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert "at least" in detail
    status = driver.find_element(By.ID, "status")
    assert detail in status.text and status.get_attribute("class") == "error"
    assert hooks(driver, "lastError") == status.text
    assert not driver.find_element(By.ID, "progress").is_displayed()
    assert driver.find_element(By.ID, "remove").is_enabled()


def test_api_key_is_asked_for_and_sent(driver: Any, photo: Path) -> None:
    from selenium.webdriver.common.by import By

    guarded = start_server("--checkpoint", str(CKPT), "--api-key", "secret")
    try:
        open_page(driver, guarded.url + "/")
        panel = driver.find_element(By.ID, "key-panel")
        wait_until(driver, "return !document.getElementById('key-panel').hidden;", "asking for the key")
        # A wrong key is refused when the page checks it against v1/config: the page asks again.
        driver.find_element(By.ID, "api-key").send_keys("wrong")
        click(driver, "key-save")
        wait_until(driver, "return !document.getElementById('key-panel').hidden && "
                           "document.getElementById('key-message').textContent.includes('not accepted');",
                   "asking again after a wrong key")
        driver.find_element(By.ID, "api-key").send_keys("secret")
        click(driver, "key-save")
        assert not panel.is_displayed()
        wait_until(driver, "return lamaFast.config !== null && lamaFast.config.auth === true;", "the server's config")
        assert driver.execute_script("return sessionStorage.getItem('lama-fast.api-key');") == "secret"
        load_image(driver, photo)
        paint(driver, STROKE_1)
        remove_and_wait(driver)
        api = api_inpaint(guarded.url, photo.read_bytes(), read_blob(driver, "lastMaskSent")[1], key="secret")
        assert np.array_equal(rgb(api.content), result_pixels(driver)[..., :3])

        # A request answered 401 (the key went stale) asks for the key, then runs again with the new one.
        driver.execute_script("sessionStorage.setItem('lama-fast.api-key', 'stale');")
        paint(driver, STROKE_2)
        driver.execute_script("window.__previousResult = window.lamaFast.resultBlob;")
        click(driver, "remove")
        wait_until(driver, "return lamaFast.state === 'error' && !document.getElementById('key-panel').hidden;",
                   "the 401 answer")
        assert "API key was not accepted" in driver.find_element(By.ID, "status").text
        driver.find_element(By.ID, "api-key").send_keys("secret")
        click(driver, "key-save")
        wait_until(driver, "return lamaFast.state === 'done' && lamaFast.resultBlob !== window.__previousResult;",
                   "the result after the key was given again")

        # A key in the address's fragment is taken and dropped from the address bar.
        driver.execute_script("sessionStorage.clear();")
        open_page(driver, guarded.url + "/#key=secret")
        wait_until(driver, "return lamaFast.config !== null;", "the server's config with the key from #key=")
        assert not driver.find_element(By.ID, "key-panel").is_displayed()
        assert "key=" not in driver.current_url
    finally:
        guarded.stop()
