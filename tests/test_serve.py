"""The HTTP server: real MNIST through the API, every bad request, concurrent load, the command."""

import concurrent.futures
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT
from jaxdigits import inputs, predictor, runs, serve
from test_preprocess import data_url, drawn_large


def _serve(exported_model):
    """The server on a free local port, in a thread; yields (host, port, log lines)."""
    lines = []
    httpd = serve.make_server(predictor.load(exported_model), "127.0.0.1", 0, log=lines.append)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield (*httpd.server_address[:2], lines)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(exported_model):
    """One server shared by the module's tests: (host, port, log lines)."""
    yield from _serve(exported_model)


@pytest.fixture
def own_server(exported_model):
    """A server for one test, so no other test's late log line can land in its log."""
    yield from _serve(exported_model)


def request(server, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or bytes, headers) of one request on a fresh connection."""
    conn = http.client.HTTPConnection(server[0], server[1], timeout=30)
    try:
        if raw is not None:  # Bytes exactly as given, for malformed requests.
            conn.connect()
            conn.sock.sendall(raw)
            reply = http.client.HTTPResponse(conn.sock, method=method)
            reply.begin()
        else:
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
            if headers is None and body is not None:
                headers = {"Content-Type": "application/json"}
            conn.request(method, path, body=body, headers=headers or {})
            reply = conn.getresponse()
        data = reply.read()
        kind = reply.getheader("Content-Type", "")
        return reply.status, json.loads(data) if kind == "application/json" else data, reply
    finally:
        conn.close()


def predict(server, payload):
    status, body, _ = request(server, "POST", "/predict", payload, {"Content-Type": "application/json"})
    assert status == 200, body
    return body


def test_api_matches_the_checkpoint_on_real_mnist(server, tiny_run, mnist):
    images, labels = mnist.test_images[:300], mnist.test_labels[:300]
    setup, params, _ = runs.load_run(tiny_run[0])
    checkpoint_labels = np.asarray(setup.model.apply(params, inputs.normalise(images, setup.mean, setup.std))).argmax(-1)
    api_labels = np.array([predict(server, {"image": (x[..., 0] / 255.0).tolist()})["label"] for x in images])
    np.testing.assert_array_equal(api_labels, checkpoint_labels)  # Image by image, not only on average.
    api_accuracy = (api_labels == labels).mean()
    assert api_accuracy == (checkpoint_labels == labels).mean() > 0.9
    print(f"\nAPI accuracy on the first 300 MNIST test images: {100 * api_accuracy:.2f}% (checkpoint: same)")


def test_drawings_sent_as_png_are_read(server, mnist):
    """MNIST digits blown up and moved on a 280x280 canvas, as a browser would send them."""
    images, labels = mnist.test_images[:50, ..., 0], mnist.test_labels[:50]
    correct = 0
    for digit, label in zip(images, labels):
        body = predict(server, {"png": data_url(drawn_large(digit, 180, 70, 40, (280, 280)))})
        assert np.asarray(body["image"]).shape == (28, 28) and len(body["probabilities"]) == 10
        assert body["input"] == "png" and body["class_name"] == str(body["label"])
        correct += body["label"] == label
    assert correct >= 45, correct


def test_pages_health_and_manifest(server, exported_model):
    status, page, reply = request(server, "GET", "/")
    assert status == 200 and reply.getheader("Content-Type").startswith("text/html")
    for asset in re.findall(rb'(?:src|href)="(/[^"]*)"', page):  # Everything the page loads is ours.
        status, _, _ = request(server, "GET", asset.decode())
        assert status == 200, asset
    assert b"http" not in page  # No CDN.
    assert request(server, "GET", "/healthz")[:2] == (200, {"status": "ok", "model": "mlp"})
    assert request(server, "GET", "/model?x=1")[1] == json.loads((exported_model / "manifest.json").read_text())


GOOD = {"image": [[0.0] * 28] * 28}
BAD_REQUESTS = {
    "malformed JSON": (dict(body=b'{"image": [[0.0'), 400, "not valid JSON"),
    "not UTF-8": (dict(body=b'\xff\xfe'), 400, "not valid JSON"),
    "not an object": (dict(body=[1, 2]), 400, "must be a JSON object"),
    "no image": (dict(body={"picture": 1}), 400, "exactly one key"),
    "both inputs": (dict(body={**GOOD, "png": "x"}), 400, "exactly one key"),
    "wrong shape": (dict(body={"image": [[0.0] * 28] * 27}), 400, r"shape \[28, 28\], got \[27, 28\]"),
    "ragged rows": (dict(body={"image": [[0.0] * 28] * 27 + [[0.0]]}), 400, "different lengths"),
    "strings": (dict(body={"image": [["a"] * 28] * 28}), 400, "only numbers"),
    "NaN": (dict(body=b'{"image": [' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]}"),
            400, "NaN is not a JSON number"),
    "out of range": (dict(body={"image": [[255] * 28] * 28}), 400, r"in \[0, 1\]"),
    "not an image": (dict(body={"png": "data:image/png;base64,aGVsbG8="}), 400, "not a PNG"),
    "not a data URL": (dict(body={"png": "http://example.com/a.png"}), 400, "must be a string starting"),
    "blank drawing": (dict(body={"png": data_url(np.zeros((280, 280)))}), 400, "blank"),
    "body too large": (dict(raw=b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n{"),
                       413, "the body is 1048577 bytes; at most 1048576"),  # Refused unread.
    "too many pixels": (dict(body={"png": data_url(np.eye(1100))}), 413,
                        "the PNG is 1100x1100 pixels; at most 262144 pixels are accepted"),
    "no Content-Type": (dict(body=b"{}", headers={}), 415, "Content-Type: application/json"),
    "form Content-Type": (dict(body=b"{}", headers={"Content-Type": "application/x-www-form-urlencoded"}),
                          415, "Content-Type: application/json"),
    "Latin-1 charset": (dict(body=b"{}", headers={"Content-Type": "application/json; charset=latin-1"}),
                        415, "UTF-8"),
    "repeated key": (dict(body=b'{"image": 1, "image": 2}'), 400, "repeats the key 'image'"),
    "Infinity literal": (dict(body=b'{"image": -Infinity}'), 400, "-Infinity is not a JSON number"),
    "huge float": (dict(body=b'{"image": [[1e999]]}'), 400, "too large for a float"),
    "huge integer": (dict(body=b'{"image": ' + b"9" * 5000 + b"}"), 400, "5000 digits"),
    "deep nesting": (dict(body=b"[" * 100000 + b"]" * 100000), 400, "the body has 100000 '\\[' and '{' characters"),
    "many arrays": (dict(body=b'{"image": [' + b",".join([b"[]"] * 2000) + b"]}"), 400,
                    "the body has 2002 '\\[' and '{' characters"),
    "a superscript length": (dict(raw="POST /predict HTTP/1.0\r\nContent-Length: \xb2\r\n\r\n".encode("latin-1")),
                             400, "is not one number"),
    "huge Content-Length": (dict(raw=b"POST /predict HTTP/1.0\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n"),
                            413, "the body is 9{30} bytes"),
    "two lengths": (dict(raw=b"POST /predict HTTP/1.0\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
                    400, "is not one number"),
    "no Content-Length": (dict(raw=b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n"), 411, "Content-Length"),
    "unknown route": (dict(method="GET", path="/admin"), 404, "no route /admin"),
    "wrong method": (dict(method="GET", path="/predict"), 405, "accepts POST, not GET"),
    "unknown method": (dict(method="BREW", path="/"), 405, "accepts GET, not BREW"),
    "malformed request line": (dict(raw=b"GET / extra HTTP/1.1\r\n\r\n"), 400, "Bad request syntax"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_and_one_line_of_json(server, case):
    kwargs, expected_status, message = BAD_REQUESTS[case]
    method, path = kwargs.pop("method", "POST"), kwargs.pop("path", "/predict")
    kwargs = dict(kwargs)
    status, body, reply = request(server, method, path, **kwargs)
    BAD_REQUESTS[case][0].update(method=method, path=path)  # Restore for reruns.
    assert status == expected_status, body
    assert isinstance(body, dict) and list(body) == ["error"] and re.search(message, body["error"]), body
    assert "\n" not in body["error"]
    if status == 405 and method != "BREW":
        assert reply.getheader("Allow") == "POST"
    assert predict(server, GOOD)["label"] in range(10)  # Still serving.


def settled_log(server, before: int, expected: int) -> list[str]:
    """The log lines after `before`, once `expected` have come and no more come for 0.3 s.

    A request's line is written just after its answer is sent, so the client can be faster."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        count = len(server[2])
        time.sleep(0.3)
        if len(server[2]) == count and count - before >= expected:
            break
    return server[2][before:]


def test_one_log_line_per_request(own_server):
    server = own_server
    request(server, "GET", "/healthz")
    request(server, "POST", "/predict", b"{oops")
    predict(server, GOOD)
    request(server, "PATCH", "/model")
    # Each line is written after its answer is sent, so on a loaded machine a request's line can
    # land after the next request's: each pattern must match exactly one line, in any order.
    new = settled_log(server, 0, 4)
    assert len(new) == 4, new
    patterns = [r"127\.0\.0\.1 GET /healthz 200 \d+B [\d.]+ms", r"127\.0\.0\.1 POST /predict 400 .*",
                r"127\.0\.0\.1 POST /predict 200 .* label=\d", r"127\.0\.0\.1 PATCH /model 405 .*"]
    assert [sum(bool(re.fullmatch(p, line)) for line in new) for p in patterns] == [1] * 4, new


@pytest.mark.slow
def test_concurrent_load(own_server, mnist):
    """8 clients, 320 requests (28x28 arrays and PNG drawings): no errors, the same answers."""
    server = own_server
    images = mnist.test_images[:40, ..., 0]
    payloads = [{"image": (x / 255.0).tolist()} for x in images] + [
        {"png": data_url(drawn_large(x, 150, 60, 60, (280, 280)))} for x in images]
    expected = [predict(server, p)["label"] for p in payloads]  # One at a time first.

    def one(i):
        start = time.perf_counter()
        body = predict(server, payloads[i % len(payloads)])
        return i, body["label"], time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(4 * len(payloads))))
    wall = time.perf_counter() - start
    assert [label for _, label, _ in results] == [expected[i % len(payloads)] for i, _, _ in results]
    total = len(payloads) + len(results)
    assert len(settled_log(server, 0, total)) == total  # One log line per request.
    ms = 1e3 * np.array([t for _, _, t in results])
    print(f"\n{len(results)} requests from 8 clients in {wall:.2f} s ({len(results) / wall:.0f}/s): "
          f"latency median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms")


@pytest.mark.slow
def test_serve_command(exported_model):
    proc = subprocess.Popen([sys.executable, "-m", "jaxdigits.serve", f"--model={exported_model}", "--port=0"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin",
                                                                              "JAX_PLATFORMS": "cpu"})
    try:
        first = proc.stderr.readline()  # Printed once the model is loaded and compiled.
        match = re.search(r"serving http://127\.0\.0\.1:(\d+)/", first)
        assert match, first + proc.stderr.read()
        assert "mlp on mnist" in first and "one prediction" in first
        server = ("127.0.0.1", int(match.group(1)))
        assert request(server, "GET", "/healthz")[0] == 200
        assert proc.stderr.readline().split()[1:5] == ["127.0.0.1", "GET", "/healthz", "200"]
    finally:
        proc.send_signal(signal.SIGTERM)  # Stops cleanly, as Ctrl-C does.
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read().strip().endswith("stopped")
    proc = subprocess.run([sys.executable, "-m", "jaxdigits.serve", f"--model={exported_model}/nothing"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {exported_model}/nothing is not a folder; pass one written by `python -m jaxdigits.export`."]


def test_serving_a_workdir_exports_it_in_memory(tiny_run, exported_model, mnist):
    images = mnist.test_images[:64].astype(np.float32) / 255.0
    from_run = serve.load_model(workdir=tiny_run[0])
    from_folder = serve.load_model(exported_model)
    np.testing.assert_array_equal(from_run.predict(images), from_folder.predict(images))
    assert from_run.manifest["accuracy"] == from_folder.manifest["accuracy"]
