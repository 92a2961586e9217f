"""Draw MNIST test digits on the served page in headless chromium and count how many it reads.

    python experiments/browser_digits.py --model=model/ --count=100 --screenshot=docs/serve.png

Each digit is traced as mouse strokes (one per run of ink >= 128 in each pixel row, 9x scale,
pen 13 px), as in tests/test_browser.py, then Predict is clicked and the shown label read. Prints
the accuracy, the model's accuracy on the same images given directly (28x28, no drawing), and
the browser-measured time from click to shown label.
"""

import statistics
import threading
import time

import numpy as np
from absl import app, flags
from playwright.sync_api import sync_playwright

from jaxdigits import data, predictor, serve

_MODEL = flags.DEFINE_string("model", None, "Exported model folder.", required=True)
_COUNT = flags.DEFINE_integer("count", 100, "How many test images (the first ones) to draw.")
_SCREENSHOT = flags.DEFINE_string("screenshot", None, "Where to save a screenshot of a hand-like 2.")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def strokes(digit, scale=9):
    out = []
    for row in range(28):
        ink = np.diff(np.concatenate([[0], digit[row] >= 128, [0]]).astype(np.int8))
        for a, b in zip(np.nonzero(ink == 1)[0], np.nonzero(ink == -1)[0] - 1):
            out.append((14.0 + scale * a, 14.0 + scale * row, 14.0 + scale * b))
    return out


def hand_drawn_two():
    """One smooth stroke shaped like a handwritten 2: an arc, a diagonal, a base line."""
    arc = [(140 + 58 * np.cos(t), 100 - 52 * np.sin(t)) for t in np.linspace(2.8, -0.6, 30)]
    return arc + [(72 + 4 * k, 236 - 1.5 * k) for k in range(0, 2)] + [
        (x, 238 + 0.1 * (x - 80)) for x in np.linspace(80, 215, 12)]


def main(argv):
    del argv  # Unused.
    model = predictor.load(_MODEL.value)
    mnist = data.load_dataset("mnist", allow_download=False)
    images, labels = mnist.test_images[:_COUNT.value], mnist.test_labels[:_COUNT.value]
    direct = model.predict(images.astype(np.float32) / 255.0).argmax(-1)
    httpd = serve.make_server(model, "127.0.0.1", 0, log=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    shown, ms = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 860, "height": 470})
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_selector("body[data-ready=true]")
        page.locator("#pen").fill("13")
        box = page.locator("#pad").bounding_box()
        for n, digit in enumerate(images[..., 0], start=1):
            if page.locator("#clear").is_enabled():
                page.click("#clear")
            for x0, y, x1 in strokes(digit):
                page.mouse.move(box["x"] + x0, box["y"] + y)
                page.mouse.down()
                page.mouse.move(box["x"] + x1, box["y"] + y, steps=3)
                page.mouse.up()
            start = time.perf_counter()
            page.click("#predict")
            page.wait_for_selector(f"#label[data-sequence='{n}']")
            ms.append(1e3 * (time.perf_counter() - start))
            shown.append(int(page.locator("#label").inner_text()))
        if _SCREENSHOT.value:
            page.click("#clear")
            page.locator("#pen").fill("18")
            points = hand_drawn_two()
            page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
            page.mouse.down()
            for x, y in points[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
            page.mouse.up()
            page.click("#predict")
            page.wait_for_selector(f"#label[data-sequence='{len(images) + 1}']")
            page.screenshot(path=_SCREENSHOT.value)
        browser.close()
    httpd.shutdown()
    shown = np.array(shown)
    print(f"{model.manifest['model']}: drawn in the browser {100 * (shown == labels).mean():.1f}% "
          f"({(shown == labels).sum()}/{len(labels)}); the same images given directly "
          f"{100 * (direct == labels).mean():.1f}%; click to shown label median "
          f"{statistics.median(ms):.1f} ms, max {max(ms):.1f} ms")


if __name__ == "__main__":
    app.run(main)
