"""Latency of a running server, one client and then 8 at once, 28x28 arrays and PNG drawings.

    python -m jaxdigits.serve --model=model/ --port=8000 &
    python experiments/serve_latency.py --url=http://127.0.0.1:8000 --requests=400
    python experiments/serve_latency.py --url=http://127.0.0.1:8000 --accuracy   # all 10,000

Payloads: the first 100 MNIST test images as 28x28 arrays, and the same digits blown up to
180 px on a 280x280 canvas as PNG data URLs (the page's path: decode, MNIST preprocessing,
model). Prints the median, 95th percentile and max round-trip time, and the server-side
milliseconds it reports (preprocessing, model).
"""

import base64
import concurrent.futures
import io
import json
import time
import urllib.request

import numpy as np
from absl import app, flags
from PIL import Image

from jaxdigits import data

_URL = flags.DEFINE_string("url", "http://127.0.0.1:8000", "The server.")
_REQUESTS = flags.DEFINE_integer("requests", 400, "Requests per measurement.")
_ACCURACY = flags.DEFINE_bool("accuracy", False, "Instead: send every MNIST test image (28x28) "
                              "through the API, 8 clients, and print the accuracy.")


def png_url(digit) -> str:
    canvas = Image.new("L", (280, 280))
    canvas.paste(Image.fromarray(digit).resize((180, 180), Image.Resampling.BILINEAR), (50, 60))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def post(body: bytes, full: bool = False):
    start = time.perf_counter()
    request = urllib.request.Request(_URL.value + "/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        result = json.loads(reply.read())
    return result if full else (1e3 * (time.perf_counter() - start), result["ms"])


def accuracy():
    mnist = data.load_dataset("mnist", allow_download=False)
    bodies = (json.dumps({"image": (d[..., 0] / 255.0).tolist()}).encode() for d in mnist.test_images)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        labels = np.array([r["label"] for r in pool.map(lambda b: post(b, full=True), bodies)])
    correct = int((labels == mnist.test_labels).sum())
    print(f"API: {correct}/{len(labels)} test images right, accuracy {100 * correct / len(labels):.2f}%")


def measure(name, bodies, clients):
    work = [bodies[i % len(bodies)] for i in range(_REQUESTS.value)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, work))
    wall = time.perf_counter() - start
    rtt = np.array([r for r, _ in results])
    model = np.array([m["model"] for _, m in results])
    prep = np.array([m["preprocess"] for _, m in results])
    print(f"{name:6s} {clients} client(s): {len(work)} requests, {len(work) / wall:.0f}/s; round trip "
          f"median {np.median(rtt):.1f} ms, p95 {np.percentile(rtt, 95):.1f} ms, max {rtt.max():.1f} ms; "
          f"server: preprocess median {np.median(prep):.2f} ms, model median {np.median(model):.2f} ms")


def main(argv):
    del argv  # Unused.
    if _ACCURACY.value:
        return accuracy()
    digits = data.load_dataset("mnist", allow_download=False).test_images[:100, ..., 0]
    arrays = [json.dumps({"image": (d / 255.0).tolist()}).encode() for d in digits]
    pngs = [json.dumps({"png": png_url(d)}).encode() for d in digits]
    for clients in (1, 8):
        measure("28x28", arrays, clients)
        measure("png", pngs, clients)


if __name__ == "__main__":
    app.run(main)
