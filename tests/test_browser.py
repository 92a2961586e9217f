"""The page in a real browser: Debian's chromium, headless, driven by Playwright with the mouse.

Digits are drawn as mouse strokes traced from MNIST test images (one horizontal stroke per run
of ink in each pixel row, scaled up 9x), so they go through everything a person's drawing goes
through: pointer events, the canvas, the PNG upload, the server's preprocessing and the model.
If chromium cannot start the test fails and says why; it is never skipped.
"""

import os
import threading

import numpy as np
import pytest

from jaxdigits import predictor, serve

pytestmark = pytest.mark.slow  # A browser's start, and mouse strokes drawn one by one.

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCALE = 9  # canvas pixels per MNIST pixel: 28 * 9 = 252 of the 280


@pytest.fixture(scope="module")
def url(exported_model):
    httpd = serve.make_server(predictor.load(exported_model), "127.0.0.1", 0, log=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def page(url):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"Playwright is not installed ({e}); pip install -e '.[test]' installs it.")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing; install Debian's chromium: apt-get install -y chromium.")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as e:
            pytest.fail(f"chromium could not start: {e}")
        page = browser.new_page(viewport={"width": 960, "height": 560})
        page.set_default_timeout(15000)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=30000)
        yield page
        assert not errors, errors
        browser.close()


def trace_strokes(digit) -> list[tuple[float, float, float, float]]:
    """Strokes (x0, y0, x1, y1) in canvas pixels covering the ink (>= 128) of a uint8 [28, 28] digit."""
    strokes = []
    for row in range(28):
        ink = np.concatenate([[0], digit[row] >= 128, [0]]).astype(np.int8)
        starts, ends = np.nonzero(np.diff(ink) == 1)[0], np.nonzero(np.diff(ink) == -1)[0] - 1
        y = 14 + SCALE * row
        strokes += [(14.0 + SCALE * a, float(y), 14.0 + SCALE * b, float(y)) for a, b in zip(starts, ends)]
    return strokes


def draw(page, strokes):
    box = page.locator("#pad").bounding_box()
    for x0, y0, x1, y1 in strokes:
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y1, steps=3)
        page.mouse.up()


def clear(page):
    if page.locator("#clear").is_enabled():  # Disabled while there is nothing to clear.
        page.click("#clear")


def pad_pixels(page) -> np.ndarray:
    """The canvas' red channel, uint8 [280, 280]."""
    data = page.evaluate("""() => Array.from(document.getElementById('pad').getContext('2d')
                                 .getImageData(0, 0, 280, 280).data.filter((_, i) => i % 4 == 0))""")
    return np.array(data, np.uint8).reshape(280, 280)


def test_drawn_digits_are_read(page, mnist, tmp_path):
    page.locator("#pen").fill("13")  # The pen-size control: strokes 13 px wide, rows 9 px apart.
    assert page.locator("#pen-value").inner_text() == "13"
    # The first test image of each class, drawn and predicted through the page.
    indices = [int(np.nonzero(mnist.test_labels == c)[0][0]) for c in range(10)]
    shown = []
    for n, index in enumerate(indices, start=1):
        clear(page)
        draw(page, trace_strokes(mnist.test_images[index, ..., 0]))
        page.click("#predict")
        page.wait_for_selector(f"#label[data-sequence='{n}']", timeout=15000)
        shown.append(int(page.locator("#label").inner_text()))
        bars = page.locator(".bar .pct").all_inner_texts()
        assert len(bars) == 10 and all(t.endswith("%") for t in bars)
        top = page.locator(".bar.top .name").inner_text()
        assert top == str(shown[-1])  # The highlighted bar is the shown digit.
        seen = page.evaluate("""() => Array.from(document.getElementById('seen').getContext('2d')
                                   .getImageData(0, 0, 28, 28).data)""")
        assert max(seen[0::4]) > 200 and seen[0] == 0  # The 28x28 input: ink, black corner.
    expected = [int(mnist.test_labels[i]) for i in indices]
    correct = sum(a == b for a, b in zip(shown, expected))
    print(f"\nbrowser: read {correct}/10 drawn digits right: shown {shown}, drawn {expected}")
    screenshot = tmp_path / "page.png"
    page.screenshot(path=screenshot)
    assert screenshot.stat().st_size > 10000
    if os.environ.get("JAXDIGITS_SCREENSHOT"):  # How docs/serve.png is made.
        page.screenshot(path=os.environ["JAXDIGITS_SCREENSHOT"])
    assert correct >= 8, (shown, expected)


def test_undo_redo_and_clear(page):
    clear(page)
    assert pad_pixels(page).max() == 0 and page.locator("#undo").is_disabled()
    draw(page, [(60, 60, 220, 60), (140, 60, 140, 230)])  # A "T" in two strokes.
    both = pad_pixels(page)
    page.click("#undo")
    one = pad_pixels(page)
    assert one[60, 100] > 200 and one[200, 140] == 0  # The second stroke is gone.
    page.keyboard.press("Control+z")
    assert pad_pixels(page).max() == 0
    page.click("#redo")
    np.testing.assert_array_equal(pad_pixels(page), one)
    page.keyboard.press("Control+y")
    np.testing.assert_array_equal(pad_pixels(page), both)
    page.click("#clear")
    assert pad_pixels(page).max() == 0 and page.locator("#label").inner_text() == "\u2013"
    page.click("#predict")  # Nothing drawn: the page says so instead of asking the server.
    assert page.locator("#status").inner_text() == "Draw a digit first."


def test_predict_as_you_draw(page, mnist):
    clear(page)
    before = page.locator("#label").get_attribute("data-sequence") or "0"
    page.check("#live")
    try:
        index = int(np.nonzero(mnist.test_labels == 7)[0][0])
        draw(page, trace_strokes(mnist.test_images[index, ..., 0]))  # No click on Predict.
        page.wait_for_function(  # Answered, and the answer shown is that of the latest request.
            f"document.body.dataset.requested !== '{before}' && "
            "document.getElementById('label').dataset.sequence === document.body.dataset.requested",
            timeout=15000)
    finally:
        page.uncheck("#live")
    # The last answer is for the whole drawing, the one test_drawn_digits_are_read reads as a 7.
    assert page.locator("#label").inner_text() == "7"
