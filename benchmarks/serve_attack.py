"""A server's peak memory and latency under worst-case requests, while ordinary drawings go on.

    python -m benchmarks.serve_attack --server=now=.:model/ --json=/tmp/attack.json
    python -m benchmarks.serve_attack --server=before=/tmp/old:/tmp/old/model \\
        --server=now=.:model/ --rounds=2            # two checkouts, measured in turn

For each server (NAME=CHECKOUT:MODEL_FOLDER: `python -m jaxdigits.serve --port=0` run from that
checkout) and each heavy payload, a fresh server process takes 16 clients sending the heavy
payload 5 times each while 4 clients send an ordinary 280x280 drawing until they are done. The
heavy payloads: a 2048x2048 RGBA PNG of a digit drawn large (25 KB, 4.2 M pixels: what a small
body can decode to), and the same drawing at 1024x1024 and at 512x512 (262,144 pixels, the
largest PNG the server accepts by default). Memory is the server's resident set from /proc/PID/status: when ready, the
most sampled every 20 ms under load, and its high-water mark (VmHWM) at the end. Latency is the
round trip per request, p50 and p99, by payload; answers are counted by status. The heavy
clients ask again at once; the ordinary ones wait a second after a 503 (as its Retry-After says)
and their time counts until their answer. Rounds alternate the servers, so a busy machine slows
them alike.
"""

import base64
import collections
import concurrent.futures
import functools
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks import common
from jaxdigits import cli, data, errors

FLAGS = flags.FLAGS
NESTED = b'{"image": [' + b",".join([b"[]"] * 349_000) + b"]}"  # Just under 1 MiB: a 400, once parsed.


def define_flags() -> None:
    flags.DEFINE_multi_string("server", [], "NAME=CHECKOUT:MODEL_FOLDER, one or more.")
    flags.DEFINE_integer("heavy_clients", 16, "Clients sending the heavy payload.")
    flags.DEFINE_integer("heavy_requests", 5, "Requests per heavy client.")
    flags.DEFINE_integer("normal_clients", 4, "Clients sending ordinary drawings meanwhile.")
    flags.DEFINE_list("sides", ["2048", "1024", "512"], "Heavy payloads: PNGs of these sides, or "
                      "'json' for 1 MB of nested empty arrays (cheap to send, 20 MB once parsed).")
    flags.DEFINE_integer("rounds", 1, "Rounds (each server and payload once per round).")
    flags.DEFINE_string("json", None, "Write the measurements here as JSON.")


@functools.cache
def drawing(side: int) -> bytes:
    """A POST /predict body: the first MNIST test digit drawn at 88% of a side x side RGBA canvas,
    white ink on transparent black as a browser canvas sends it (2048: 25 KB of PNG)."""
    digit = data.load_dataset("mnist", allow_download=False).test_images[0, ..., 0]
    size = int(side * 0.88)
    ink = Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (side, side))
    canvas.paste(ink.point(lambda v: 255 if v > 100 else 0), (side // 20, side // 17))
    buffer = io.BytesIO()
    Image.merge("RGBA", [canvas] * 4).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return json.dumps({"png": url}).encode()


def start_server(checkout: str, model: str):
    """(process, port, stderr lines) of `python -m jaxdigits.serve` run from `checkout`."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdigits.serve", f"--model={os.path.abspath(model)}",
                             "--port=0"], cwd=checkout, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        match = re.search(r"serving http://[^:]+:(\d+)/", line)
        if match:
            break
    else:
        raise errors.UserError(f"the server from {checkout} did not start: {''.join(lines)[-500:]}")
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # Drained.
    return proc, int(match.group(1)), lines


def memory_mb(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def post(port: int, body: bytes) -> tuple[float, object]:
    """(round trip in ms, status or the exception's name) of one POST /predict."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        status = reply.status
    except OSError as e:
        status = type(e).__name__
    finally:
        conn.close()
    return 1e3 * (time.perf_counter() - start), status


def summary(results: list) -> dict:
    """Counts by final status, 503s waited out (`busy`), round-trip percentiles (retries included)."""
    ms = np.array([r[0] for r in results])
    return {"requests": len(results), "statuses": dict(collections.Counter(str(r[1]) for r in results)),
            "busy": sum(r[2] for r in results if len(r) > 2),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


def attack(checkout: str, model: str, heavy: bytes) -> dict:
    """One fresh server under the load of the module's docstring."""
    proc, port, lines = start_server(checkout, model)
    normal, done, samples = drawing(280), threading.Event(), []
    try:
        ready = memory_mb(proc.pid)
        def sample():
            while not done.wait(0.02):
                samples.append(memory_mb(proc.pid)["VmRSS"])

        sampler = threading.Thread(target=sample)
        sampler.start()

        def ordinary(_):  # A well-behaved client: waits as Retry-After says, then asks again.
            out = []
            while not done.is_set():
                start, busy = time.perf_counter(), 0
                while (answer := post(port, normal))[1] == 503 and not done.is_set():
                    busy += 1
                    time.sleep(1.0)
                out.append((1e3 * (time.perf_counter() - start), answer[1], busy))
            return out

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(FLAGS.heavy_clients + FLAGS.normal_clients) as pool:
            normals = [pool.submit(ordinary, i) for i in range(FLAGS.normal_clients)]
            heavy_results = list(pool.map(lambda _: post(port, heavy),
                                          range(FLAGS.heavy_clients * FLAGS.heavy_requests)))
            done.set()
            normal_results = [r for f in normals for r in f.result()]
        wall = time.perf_counter() - start
        sampler.join()
        end = memory_mb(proc.pid)
    finally:
        done.set()
        proc.terminate()
        proc.wait(timeout=60)
    return {"rss_ready_mb": ready["VmRSS"], "rss_peak_sampled_mb": max(samples, default=ready["VmRSS"]),
            "vmhwm_end_mb": end["VmHWM"], "wall_s": wall, "heavy": summary(heavy_results),
            "normal": summary(normal_results),
            "tracebacks_in_log": sum("Traceback" in line for line in lines)}


def _spread(values, unit: str, scale: float = 1.0) -> str:
    values = sorted(v * scale for v in values)
    middle = statistics.median(values)
    text = f"{middle:,.0f}" if middle >= 10 else f"{middle:.2f}"
    if len(values) > 1:
        text += f" ({values[0]:,.0f}-{values[-1]:,.0f})" if middle >= 10 else f" ({values[0]:.2f}-{values[-1]:.2f})"
    return text + unit


def table(results: dict, labels: dict) -> dict:
    """The docs table: per server and heavy payload, medians over rounds (min-max)."""
    rows = []
    for job, runs in results.items():
        name, payload = job.split(" / ")
        answers = collections.Counter()
        for run in runs:
            answers.update(run["heavy"]["statuses"])
        rows.append([labels.get(name, name), payload, ", ".join(f"{n} x {s}" for s, n in sorted(answers.items())),
                     _spread([r["heavy"]["p50_ms"] for r in runs], " s", 1e-3),
                     _spread([r["heavy"]["p99_ms"] for r in runs], " s", 1e-3),
                     _spread([r["normal"]["p50_ms"] for r in runs], " ms"),
                     _spread([r["normal"]["p99_ms"] for r in runs], " ms"),
                     _spread([r["rss_ready_mb"] for r in runs], " MB"),
                     _spread([r["rss_peak_sampled_mb"] for r in runs], " MB")])
    return {"table": "serve_attack", "page": "docs/serving.md",
            "columns": ["server", "heavy request", "answers to the heavy requests", "heavy: p50",
                        "heavy: p99", "drawings meanwhile: p50", "drawings: p99", "memory when ready",
                        "memory at peak"], "rows": rows}


def main(argv):
    cli.start(argv)
    servers = dict(s.split("=", 1) for s in FLAGS.server)
    if not servers or not all(":" in v for v in servers.values()):
        raise errors.UserError("pass --server=NAME=CHECKOUT:MODEL_FOLDER (one or more).")
    heavies = {("1 MB of JSON [[], [], ...]" if side == "json" else f"{side}x{side}"):
               (NESTED if side == "json" else drawing(int(side))) for side in FLAGS.sides}
    print("heavy bodies: " + ", ".join(f"{k} {len(v) // 1024} KB" for k, v in heavies.items()))
    jobs = {f"{name} / {kind}": (lambda c=checkout_model, h=body: attack(*c.split(":", 1), h))
            for name, checkout_model in servers.items() for kind, body in heavies.items()}
    results = common.alternate(jobs, FLAGS.rounds, lambda r: (
        f"RSS {r['rss_ready_mb']:.0f} -> {r['rss_peak_sampled_mb']:.0f} MB; heavy {r['heavy']['statuses']} "
        f"p50 {r['heavy']['p50_ms']:.0f} p99 {r['heavy']['p99_ms']:.0f} ms; normal "
        f"{r['normal']['statuses']} ({r['normal']['busy']} 503s waited out) p50 {r['normal']['p50_ms']:.0f} p99 {r['normal']['p99_ms']:.0f} ms"))
    common.write_json(FLAGS.json, {**table(results, {}), "results": results, "servers": servers,
                                   "flags": {k: FLAGS[k].value for k in ("heavy_clients", "heavy_requests",
                                                                        "normal_clients", "rounds", "sides")},
                                   "machine": common.machine()})


if __name__ == "__main__":
    define_flags()
    app.run(errors.report_user_errors(main))
