"""End to end in real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
`streamlit run app.py` on a free port; upload a page, wait for the prediction and the heatmap,
edit the caption, correct the label with the keyboard, check the store. Screenshots and the
timings seen in the browser go to artifacts/browser/."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from fusion.imaging.images import image_sha256
from fusion.core.settings import REPO_ROOT
from fusion.store.labeling import open_store

ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_file(tmp_path: Path) -> Path:
    image = Image.new("RGB", (1000, 420), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=42)
    draw.text((40, 50), "Potassium 4.1 mmol/L", fill="black", font=font)
    draw.text((40, 170), "Creatinine 88 umol/L", fill="black", font=font)
    draw.rectangle((0, 0, 2, 2), fill=tuple(os.urandom(3)))  # a new item on every run
    path = tmp_path / "labs-browser.png"
    image.save(path)
    return path


# Notes in window.headlineShownAt (epoch ms) when the prediction's headline first differs from
# arguments[0] and the browser has painted it (a task after the next animation frame).
NOTE_WHEN_SHOWN = """
const before = arguments[0];
window.headlineShownAt = null;
const headline = () => [...document.querySelectorAll('[data-testid=stMarkdownContainer]')]
    .map(e => e.innerText).find(t => t.includes('alone:')) || '';
const observer = new MutationObserver(() => {
    if (headline() === before) return;
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { window.headlineShownAt = Date.now(); }, 0));
});
observer.observe(document.body, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def server(demo_project, workspace):
    yield from run_app(workspace, "streamlit.log")


@pytest.fixture(scope="module")
def auth_server(demo_project, workspace, settings):
    """The app with accounts on (FUSION_AUTH=1), and an admin to sign in as."""
    from fusion.services import accounts

    store = open_store(settings)
    if accounts.get_user(store, "browser-admin") is None:
        accounts.add_user(store, "browser-admin", "browser-pass-1", "admin", by="test setup")
    yield from run_app(workspace, "streamlit-auth.log", FUSION_AUTH="1")


def run_app(workspace: Path, log_name: str, **env: str):
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / log_name, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=REPO_ROOT, env=os.environ | {"FUSION_HOME": str(workspace)} | env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    return webdriver.Chrome(service=Service(str(DRIVER)), options=options)


def wait_for(condition, timeout: float = 180, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception:  # the page is re-rendering: elements come and go
            pass
        time.sleep(poll)
    raise TimeoutError(f"gave up after {timeout} s")


def body_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def test_upload_predict_edit_and_correct_with_the_keyboard(server, demo_project, settings, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    timings = {}
    driver = browser(1280, 800)
    try:
        driver.get(server)
        start = time.time()
        wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "input[type=file]"), timeout=120)
        wait_for(lambda: "Next in queue" in body_text(driver))
        timings["review_first_open_s"] = round(time.time() - start, 2)   # a fresh server: loads the models
        driver.refresh()
        start = time.time()
        upload = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "input[type=file]"))
        wait_for(lambda: "Next in queue" in body_text(driver))
        timings["review_interactive_warm_s"] = round(time.time() - start, 2)

        def first_text(selector: str, needle: str) -> str:   # one round trip: polls stay ~10 ms apart
            return driver.execute_script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)"
                ".find(t => t.includes(arguments[1])) || ''", selector, needle)

        def timings_line() -> str:
            return first_text("[data-testid=stCaptionContainer]", "total")

        path = page_file(tmp_path)
        start = time.time()
        upload.send_keys(str(path))
        wait_for(lambda: "Your decision" in body_text(driver) and "alone:" in body_text(driver))
        timings["upload_to_prediction_s"] = round(time.time() - start, 2)
        ocr_seconds = re.search(r"OCR (\d+\.\d) s", wait_for(timings_line, timeout=120))
        timings["ocr_of_that_upload_s"] = float(ocr_seconds.group(1)) if ocr_seconds else None
        wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "[data-testid=stImage] img"))
        driver.save_screenshot(str(ARTIFACTS / "review-1280x800.png"))

        def headline() -> str:   # the "### label / confidence / image alone / text alone" block
            return first_text("[data-testid=stMarkdownContainer]", "alone:")

        # Each caption flips the topic, so the headline (label and percentages) visibly changes.
        # The page itself notes when the new headline reaches the screen (the frame after the DOM
        # change): WebDriver's own calls wait while the page is busy, which adds up to 0.5 s here.
        for n, words in enumerate(["ECG troponin chest pain cardiology", "potassium creatinine laboratory panel"] * 2):
            before, explained_before = wait_for(headline), wait_for(timings_line)
            time.sleep(1)   # a reviewer reads the explanation first; the page finishes drawing it meanwhile
            caption = driver.find_element(By.CSS_SELECTOR, "textarea[aria-label='Caption or note']")
            caption.send_keys(Keys.CONTROL, "a")
            caption.send_keys(words)
            driver.execute_script(NOTE_WHEN_SHOWN, before)
            start = time.time()
            caption.send_keys(Keys.CONTROL, Keys.ENTER)   # commit the text area
            # Set once the headline differs from before: no polling of the page while it redraws.
            shown = wait_for(lambda: driver.execute_script("return window.headlineShownAt"), timeout=60, poll=0.02)
            timings[f"caption_edit_{n + 1}_to_new_prediction_s"] = round(shown / 1000 - start, 3)
            wait_for(lambda: timings_line() != explained_before, timeout=60, poll=0.02)
            timings[f"caption_edit_{n + 1}_to_new_explanation_s"] = round(time.time() - start, 2)

        # Correct with the keyboard: key 2 is the project's second label.
        target = list(demo_project.labels)[1]
        driver.execute_script("document.activeElement.blur()")   # shortcuts don't fire while typing
        store = open_store(settings)
        sha = image_sha256(path.read_bytes())

        def decided():
            return (i := store.item(demo_project.name, sha[:16])).label == target and i

        for _ in range(3):   # a key pressed while the page is still re-rendering can be lost: press again
            ActionChains(driver).send_keys("2").perform()
            try:
                item = wait_for(decided, timeout=20)
                break
            except TimeoutError:
                driver.execute_script("document.activeElement.blur()")
        item = wait_for(decided, timeout=5)
        assert item.status in ("accepted", "corrected") and item.caption == "potassium creatinine laboratory panel"
        last = store.history(demo_project.name, item.id)[-1]
        assert last.new_label == target and last.action in ("accept", "correct") and last.model_version == "v1"
        wait_for(lambda: "saved" in body_text(driver))
        driver.save_screenshot(str(ARTIFACTS / "review-after-decision-1280x800.png"))
    finally:
        driver.quit()
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
    print("browser timings:", timings)


def check_rendered(driver, name: str) -> None:
    """Save the screenshot and check what it shows: no error box, nothing wider than the window
    (a sideways scroll), and a picture with something drawn in it (not a blank or one-colour page)."""
    from selenium.webdriver.common.by import By

    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid=stException]"), name
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name}: {overflow} px wider than the window"
    with Image.open(path) as shot:
        grey = shot.convert("L")
        darkest, lightest = grey.getextrema()
        assert lightest - darkest > 100 and len(grey.getcolors()) > 20, name


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_pages_render_at_common_sizes(server, size):
    from selenium.webdriver.common.by import By

    driver = browser(*size)
    try:
        driver.get(server)
        wait_for(lambda: "Next in queue" in body_text(driver))
        check_rendered(driver, f"review-empty-{size[0]}x{size[1]}")
        driver.get(server + "/dataset")
        start = time.time()
        wait_for(lambda: "items match" in body_text(driver)
                 and driver.find_elements(By.CSS_SELECTOR, "[data-testid=stDataFrame]"))
        loaded = time.time() - start
        time.sleep(1)  # let the grid paint its thumbnails
        check_rendered(driver, f"dataset-{size[0]}x{size[1]}")
        print(f"dataset page at {size}: {loaded:.2f} s")
        for page, ready in (("train", "Model versions"), ("evaluate", "Learning curve")):
            driver.get(f"{server}/{page}")
            wait_for(lambda: ready in body_text(driver))
            time.sleep(1)
            check_rendered(driver, f"{page}-{size[0]}x{size[1]}")
    finally:
        driver.quit()


def test_clicking_a_confusion_matrix_cell_lists_its_items(server):
    """Step 12: a click on a cell of the Evaluate page's confusion matrix shows that cell's items."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = browser(1280, 800)
    try:
        driver.get(f"{server}/evaluate")
        wait_for(lambda: "Click a cell" in body_text(driver) and
                 len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .point")) > 1)
        time.sleep(1)    # the chart settles
        cell = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .scatterlayer .point")[0]   # a diagonal cell
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        ActionChains(driver).move_to_element(cell).click().perform()
        shown = wait_for(lambda: re.search(r"True (\S+), predicted (\S+)", body_text(driver)), timeout=60)
        assert shown.group(1) == shown.group(2)           # the first cell is true = predicted
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-testid=stDataFrame]"))
        driver.save_screenshot(str(ARTIFACTS / "evaluate-cell-clicked-1280x800.png"))
    finally:
        driver.quit()


def click_button(driver, label: str) -> None:
    """Click the button with this label, again if the page re-rendered it meanwhile."""
    from selenium.webdriver.common.by import By

    wait_for(lambda: [b for b in driver.find_elements(By.CSS_SELECTOR, "button") if label in b.text][0]
             .click() or True, timeout=30)


def test_signed_in_survives_a_reload_and_a_deep_url_signed_out_shows_only_sign_in(auth_server):
    """Step 12: with accounts on, a reload keeps you signed in (a signed, expiring token in a
    cookie, never the password); /dataset opened signed out shows the sign-in form alone, and
    after signing in, the Dataset page; signing out ends it, also after a reload."""
    from selenium.webdriver.common.by import By

    def password_box():
        return driver.find_elements(By.CSS_SELECTOR, "input[type=password]")

    driver = browser(1280, 800)
    try:
        driver.get(f"{auth_server}/dataset")
        wait_for(password_box)
        time.sleep(1)
        text = body_text(driver)
        assert "Page not found" not in text and "Dataset" not in text and "Review" not in text
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-testid=stSidebarNav]")
        driver.save_screenshot(str(ARTIFACTS / "deep-url-signed-out-1280x800.png"))

        driver.find_element(By.CSS_SELECTOR, "input[aria-label='User name']").send_keys("browser-admin")
        password_box()[0].send_keys("browser-pass-1")
        click_button(driver, "Sign in")
        wait_for(lambda: "Signed in as" in body_text(driver) and
                 any(h.text == "Dataset" for h in driver.find_elements(By.CSS_SELECTOR, "h1")), timeout=120)
        assert driver.current_url.endswith("/dataset")
        cookie = wait_for(lambda: driver.get_cookie("fusionlab_session"), timeout=30)
        assert "browser-pass-1" not in cookie["value"] and cookie["value"].count(".") == 1

        driver.refresh()
        wait_for(lambda: "Signed in as" in body_text(driver) or password_box(), timeout=120)
        assert "Signed in as browser-admin" in body_text(driver) and not password_box()

        click_button(driver, "Sign out")
        wait_for(password_box)
        time.sleep(1)
        driver.refresh()
        wait_for(lambda: "Signed in as" in body_text(driver) or password_box(), timeout=120)
        assert password_box() and "Signed in as" not in body_text(driver)
    finally:
        driver.quit()


def test_next_in_queue_opens_another_page(server, demo_project, settings):
    """Step 12: pressing Next in queue twice shows two different pages, never the one on screen."""
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem
    from helpers import png_bytes

    store = open_store(settings)
    seed = int.from_bytes(os.urandom(2), "big")
    store.add_items(demo_project.name, [NewItem(check_image_file(png_bytes(40_000 + seed * 2 + i), settings),
                                                f"queued-{seed}-{i}.png", None, "", "", None, "browser test")
                                        for i in range(2)], user="browser test")
    driver = browser(1280, 800)

    def on_screen() -> str:
        found = re.search(r"Your decision on (\S+)", body_text(driver))
        return found.group(1) if found else ""

    try:
        driver.get(server)
        wait_for(lambda: "Next in queue" in body_text(driver))
        seen = []
        for _ in range(2):
            before = on_screen()
            click_button(driver, "Next in queue")
            seen.append(wait_for(lambda: (shown := on_screen()) and shown != before and shown, timeout=180))
        assert seen[0] != seen[1]
    finally:
        driver.quit()
