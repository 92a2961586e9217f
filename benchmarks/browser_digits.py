"""Draw MNIST test digits on the served page in headless chromium and count how many it reads.

    python -m benchmarks.browser_digits --model=model/ --count=100 --screenshot=docs/serve.png

Result, 2-core AMD EPYC, busy (load 13.5-14.6), 2026-11-22 (then
`experiments/browser_digits.py`), the seed-0 MLP exported, Debian's Chromium 156 through
Playwright 1.65: 98 / 100 drawn digits read right (100 / 100 given directly as 28x28 arrays);
from the click to the label on the page, median 80.1 ms, max 828 ms. The screenshot in the
README is its last step. BUILD_NOTES.md.

Each digit is traced as mouse strokes (one per run of ink >= 128 in each pixel row, 9x scale,
pen 13 px), as in tests/test_browser.py, then Predict is clicked and the shown label read. Prints
the accuracy, the model's accuracy on the same images given directly (28x28, no drawing), and
the browser-measured time from click to shown label. Needs Playwright (the `test` extra) and
/usr/bin/chromium.
"""

import statistics
import threading
import time

import numpy as np
from absl import app, flags

from benchmarks import common
from jaxdigits import cli, data, errors, predictor, serve

FLAGS = flags.FLAGS
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def define_flags() -> None:
    flags.DEFINE_string("model", None, "Exported model folder.", required=True)
    flags.DEFINE_integer("count", 100, "How many test images (the first ones) to draw.")
    flags.DEFINE_string("screenshot", None, "Where to save a screenshot of a hand-like 2.")
    flags.DEFINE_string("json", None, "Write the counts and times here as JSON.")


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


def draw(model, images, screenshot=None) -> tuple[list[int], list[float]]:
    """The labels the page shows for `images` drawn on it, and the milliseconds from each click
    on Predict to the shown label; then, with `screenshot`, a hand-like 2 saved there."""
    from playwright.sync_api import sync_playwright  # The test extra; only needed here.

    httpd = serve.make_server(model, "127.0.0.1", 0, log=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    shown, ms = [], []
    try:
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
            if screenshot:
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
                page.screenshot(path=screenshot)
            browser.close()
    finally:
        httpd.shutdown()
    return shown, ms


def main(argv):
    cli.start(argv)
    model = predictor.load(FLAGS.model)
    mnist = data.load_dataset("mnist", allow_download=False)
    images, labels = mnist.test_images[:FLAGS.count], mnist.test_labels[:FLAGS.count]
    direct = model.predict(images.astype(np.float32) / 255.0).argmax(-1)
    shown, ms = draw(model, images, FLAGS.screenshot)
    shown = np.array(shown)
    right, direct_right = int((shown == labels).sum()), int((direct == labels).sum())
    print(f"{model.manifest['model']}: drawn in the browser {100 * right / len(labels):.1f}% "
          f"({right}/{len(labels)}); the same images given directly "
          f"{100 * direct_right / len(labels):.1f}%; click to shown label median "
          f"{statistics.median(ms):.1f} ms, max {max(ms):.1f} ms")
    common.write_json(FLAGS.json, {
        "model": model.manifest["model"], "count": len(labels), "drawn_right": right,
        "direct_right": direct_right, "click_to_label_ms": common.spread(ms),
        "shown": shown.tolist(), "labels": labels.tolist(), "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
