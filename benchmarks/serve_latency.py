"""Latency of a running server, one client and then 8 at once, 28x28 arrays and PNG drawings.

    python -m jaxdigits.serve --model=model/ --port=8000 &
    python -m benchmarks.serve_latency --url=http://127.0.0.1:8000 --requests=400 --json=/tmp/l.json
    python -m benchmarks.serve_latency --url=http://127.0.0.1:8000 --accuracy   # all 10,000

Result (results/serve_latency.json, docs/serving.md), 2-core Intel Xeon, quiet, 2026-12-02, the
seed-0 MLP exported: one client, 28x28 arrays 532 requests/s, median round trip 1.8 ms, PNG
drawings 402/s, 2.4 ms; 8 clients, arrays 506/s, 14.6 ms, PNGs 458/s, 17.1 ms. `--accuracy`
sends all 10,000 test images through the API (98.23 %, the checkpoint's own accuracy, on AMD).

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

from benchmarks import common
from jaxdigits import cli, data, errors

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("url", "http://127.0.0.1:8000", "The server.")
    flags.DEFINE_integer("requests", 400, "Requests per measurement.")
    flags.DEFINE_bool("accuracy", False, "Instead: send every MNIST test image (28x28) through "
                      "the API, 8 clients, and print the accuracy.")
    flags.DEFINE_string("json", None, "Write the measurements here as JSON.")


def png_url(digit) -> str:
    canvas = Image.new("L", (280, 280))
    canvas.paste(Image.fromarray(digit).resize((180, 180), Image.Resampling.BILINEAR), (50, 60))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def post(url: str, body: bytes) -> tuple[float, dict]:
    """(round-trip milliseconds, the reply) of one POST /predict."""
    start = time.perf_counter()
    request = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        result = json.loads(reply.read())
    return 1e3 * (time.perf_counter() - start), result


def accuracy(url: str) -> dict:
    mnist = data.load_dataset("mnist", allow_download=False)
    bodies = (json.dumps({"image": (d[..., 0] / 255.0).tolist()}).encode()
              for d in mnist.test_images)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        labels = np.array([r["label"] for _, r in pool.map(lambda b: post(url, b), bodies)])
    correct = int((labels == mnist.test_labels).sum())
    print(f"API: {correct}/{len(labels)} test images right, "
          f"accuracy {100 * correct / len(labels):.2f}%")
    return {"correct": correct, "count": len(labels), "accuracy": correct / len(labels)}


def measure(url: str, payload: str, bodies: list, clients: int, requests: int) -> dict:
    work = [bodies[i % len(bodies)] for i in range(requests)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda b: post(url, b), work))
    wall = time.perf_counter() - start
    rtt = np.array([r for r, _ in results])
    row = {"payload": payload, "clients": clients, "requests": len(work),
           "requests_per_second": len(work) / wall, "median_ms": float(np.median(rtt)),
           "p95_ms": float(np.percentile(rtt, 95)), "max_ms": float(rtt.max()),
           "server_preprocess_median_ms": float(np.median([m["ms"]["preprocess"]
                                                           for _, m in results])),
           "server_model_median_ms": float(np.median([m["ms"]["model"] for _, m in results]))}
    print(f"{payload:6s} {clients} client(s): {len(work)} requests, "
          f"{row['requests_per_second']:.0f}/s; round trip median {row['median_ms']:.1f} ms, "
          f"p95 {row['p95_ms']:.1f} ms, max {row['max_ms']:.1f} ms; server: preprocess median "
          f"{row['server_preprocess_median_ms']:.2f} ms, model median "
          f"{row['server_model_median_ms']:.2f} ms")
    return row


def latency(url: str, requests: int) -> list[dict]:
    digits = data.load_dataset("mnist", allow_download=False).test_images[:100, ..., 0]
    arrays = [json.dumps({"image": (d / 255.0).tolist()}).encode() for d in digits]
    pngs = [json.dumps({"png": png_url(d)}).encode() for d in digits]
    return [measure(url, name, bodies, clients, requests)
            for clients in (1, 8) for name, bodies in (("28x28", arrays), ("png", pngs))]


def main(argv):
    cli.start(argv)
    if FLAGS.accuracy:
        result = {"accuracy": accuracy(FLAGS.url)}
    else:
        result = {"rows": latency(FLAGS.url, FLAGS.requests)}
    common.write_json(FLAGS.json, {**result, "url": FLAGS.url, "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
