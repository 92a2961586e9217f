"""The server as an attacker meets it: fuzzed requests, floods, slow and vanishing clients, a model
whose answers are not numbers, and every flag of the command. Each answer must be one line of
valid JSON with a 4xx (or a 503 that says when to come back), the server must keep serving, and
its log must hold one line per request and never a traceback."""

import base64
import contextlib
import http.client
import json
import socket
import struct
import threading
import time

import numpy as np
import pytest

from conftest import run_cli_cases
from jaxdigits import predictor, serve
from test_preprocess import data_url, drawn_large
from test_serve import GOOD

PNG = data_url(drawn_large(np.eye(28, dtype=np.uint8) * 255, 120, 40, 40, (200, 200)))


@pytest.fixture(scope="module")
def model(exported_model):
    return predictor.load(exported_model)


@contextlib.contextmanager
def serving(model, **limits):
    """A server with `limits` on a free port, in a thread: yields (port, log lines)."""
    lines = []
    httpd = serve.make_server(model, "127.0.0.1", 0, serve.Limits(**limits), log=lines.append)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], lines
    finally:
        httpd.shutdown()
        httpd.server_close()


def strict_json(data: bytes):
    return json.loads(data, parse_constant=lambda name: pytest.fail(f"{name} in an answer"))


def exchange(port: int, raw: bytes, timeout: float = 30):
    """(status, parsed JSON or None, reply) for bytes sent as they are; the server may close early."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        reply = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode("latin-1"))
        reply.begin()
        data = reply.read()
    kind = reply.getheader("Content-Type", "")
    return reply.status, strict_json(data) if kind == "application/json" and data else None, reply


def post(body: bytes, content_type=b"application/json", extra=b"") -> bytes:
    return (b"POST /predict HTTP/1.0\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def mutated(rng, data: bytes) -> bytes:
    """`data` with a few random bytes flipped, cut, or repeated."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        if not data:
            break
        kind, at = rng.integers(3), int(rng.integers(len(data)))
        if kind == 0:
            data[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            del data[at:at + int(rng.integers(1, 64))]
        else:
            data[at:at] = data[at:at + int(rng.integers(1, 64))]
    return bytes(data)


def fuzz_cases(seed: int = 0, count: int = 160) -> list[bytes]:
    """Requests from a seeded generator: mutated JSON bodies, PNGs with flipped bytes (re-encoded,
    so the decoder sees them), odd methods, paths, headers and lengths."""
    rng = np.random.default_rng(seed)
    png = base64.b64decode(PNG.split(",", 1)[1])
    good = json.dumps(GOOD).encode()
    heads = [b"GET / HTTP/1.0", b"BREW /predict HTTP/1.0", b"GET /static/../serve.py HTTP/1.0",
             b"GET /\x1b[31mred HTTP/1.0", b"GET /" + b"a" * 5000 + b" HTTP/1.0", b"POST /model HTTP/1.0",
             b"GET /predict HTTP/9.9", b"\x00\x01\x02", b"GET", b"HEAD /healthz HTTP/1.0",
             b"OPTIONS * HTTP/1.0", b"POST /predict?x=%00 HTTP/1.0"]
    cases = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            png_url = "data:image/png;base64," + base64.b64encode(mutated(rng, png)).decode()
            cases.append(post(json.dumps({"png": png_url}).encode()))
        elif kind == 1:
            cases.append(post(mutated(rng, good)))
        elif kind == 2:
            cases.append(heads[i // 4 % len(heads)] + b"\r\n" + mutated(rng, b"Host: x\r\nX: y\r\n") + b"\r\n\r\n")
        else:
            extra = [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: -1\r\n",
                     b"Content-Type: text/plain\r\n", b"X" * 70000 + b": 1\r\n", b"no colon\r\n"]
            cases.append(post(good[:rng.integers(len(good))], extra=extra[i // 4 % len(extra)]))
    return cases


def test_fuzzed_requests_get_json_and_the_server_keeps_serving(model, capfd):
    allowed = {200, 400, 404, 405, 408, 411, 413, 415, 431, 505}
    with serving(model, request_timeout=1) as (port, log):
        statuses = []
        for raw in fuzz_cases():
            status, body, _ = exchange(port, raw)
            statuses.append(status)
            assert status in allowed, (raw[:200], status, body)
            if status >= 400 and raw.split(b" ", 1)[0] != b"HEAD":
                assert list(body) == ["error"] and "\n" not in body["error"], body
        assert exchange(port, post(json.dumps(GOOD).encode()))[0] == 200
        time.sleep(0.3)  # The last lines are written just after the answers.
    assert len(log) == len(statuses) + 1 and all("\x1b" not in line for line in log)
    assert "Traceback" not in capfd.readouterr().err
    assert {200, 400, 404, 405}.issubset(statuses)


def slow(model, seconds: float):
    """`model` whose every prediction takes `seconds` longer."""
    def call(params, images):
        time.sleep(seconds)
        return model.call(params, images)
    return predictor.Predictor(model.manifest, call, model.params)


@pytest.mark.slow
def test_a_flood_beyond_the_inflight_bound_gets_503_at_once(model):
    with serving(slow(model, 0.3), max_inflight=2, workers=1) as (port, log):
        def one(_):
            start = time.perf_counter()
            status, body, reply = exchange(port, post(json.dumps(GOOD).encode()))
            return status, body, reply.getheader("Retry-After"), time.perf_counter() - start

        with __import__("concurrent.futures").futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
    busy = [a for a in answers if a[0] == 503]
    assert {a[0] for a in answers} == {200, 503} and 2 <= len(answers) - len(busy) <= 6, answers
    for _, body, retry, seconds in busy:
        assert retry == "1" and "busy" in body["error"] and seconds < 0.3 + 0.25


@pytest.mark.slow
def test_connections_beyond_the_cap_get_503_from_the_acceptor(model):
    with serving(model, max_connections=2) as (port, log):
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        status, body, reply = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert status == 503 and "too many connections" in body["error"] and reply.getheader("Retry-After") == "1"
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        assert exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")[0] == 200
    assert any("refused: 2 connections open (503)" in line for line in log), log


@pytest.mark.slow
def test_slow_clients_get_408_and_are_dropped(model, capfd):
    """Half a request line, half a body, and a byte every 0.2 s: each dropped at the deadline."""
    with serving(model, request_timeout=0.6) as (port, log):
        def trickle(sock):
            with contextlib.suppress(OSError):  # Until the server shuts the connection.
                for byte in b"GET /healthz HTTP/1.0\r\nX-Slow: " + b"a" * 40:
                    time.sleep(0.2)
                    sock.send(bytes([byte]))

        half_body = post(b"{" + b" " * 99)[:-60]
        starts, socks = [], []
        for send in (lambda s: s.sendall(b"GET /hea"), lambda s: s.sendall(half_body), trickle):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            starts.append(time.perf_counter())
            with contextlib.suppress(OSError):
                threading.Thread(target=send, args=(sock,), daemon=True).start()
            socks.append(sock)
        for sock, start in zip(socks, starts):
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 408 and "within 0.6 s" in strict_json(reply.read())["error"]
            assert 0.5 < time.perf_counter() - start < 3
            sock.close()
        assert exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")[0] == 200
        time.sleep(0.3)
    assert sum("dropped: no whole request within 0.6 s (408)" in line for line in log) == 3, log
    assert len(log) == 4 and "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_clients_that_hang_up_cost_one_line(model, capfd):
    with serving(slow(model, 0.3)) as (port, log):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(post(json.dumps(GOOD).encode()))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # A reset before the answer comes.
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(post(b"x" * 100)[:-50])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # Gone mid-body.
        socket.create_connection(("127.0.0.1", port)).close()  # Connected, asked nothing.
        time.sleep(0.8)
        assert exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")[0] == 200
        time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err
    assert len(log) == 3 and all("client gone" in line for line in log[:2]) and " 200 " in log[2], log


def test_a_model_giving_nan_gets_a_json_500(model):
    def call(params, images):
        return {k: v * np.nan for k, v in model.call(params, images).items()}

    with serving(predictor.Predictor(model.manifest, call, model.params)) as (port, log):
        status, body, _ = exchange(port, post(json.dumps(GOOD).encode()))
        assert status == 500 and "NaN or infinite probabilities" in body["error"]
        assert exchange(port, b"GET /model HTTP/1.0\r\n\r\n")[0] == 200


@pytest.mark.slow
def test_every_flag_is_checked(exported_model, tmp_path):
    """One sentence and exit code 2 for each bad flag, port in use and damaged model."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for part in (predictor.MANIFEST, predictor.PROGRAM, predictor.PARAMS):
        (damaged / part).write_bytes((exported_model / part).read_bytes())
    (damaged / predictor.PROGRAM).write_bytes(b"x" + (exported_model / predictor.PROGRAM).read_bytes()[1:])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    model = f"--model={exported_model}"
    cases = {
        "--port=70000": "--port must be 0 to 65535 (0: any free port), got 70000.",
        "--port=-1": "--port must be 0 to 65535 (0: any free port), got -1.",
        "--host= ": "--host is empty; pass 127.0.0.1 (this machine) or 0.0.0.0 (every interface).",
        "--max_inflight=0": "--max_inflight must be a positive number, got 0.",
        "--request_timeout=-1": "--request_timeout must be a positive number, got -1.",
        "--request_timeout=inf": "--request_timeout must be a positive number, got inf.",
        "--max_pixels=0": "--max_pixels must be a positive number, got 0.",
        "--workers=4 --max_inflight=2": "--workers (4) must be at most --max_inflight (2).",
        f"--port={taken.getsockname()[1]}": f"cannot listen on 127.0.0.1:{taken.getsockname()[1]} "
                                            "(Address already in use); pass another --host or --port.",
        "--host=192.0.2.1": "cannot listen on 192.0.2.1:8000 (Cannot assign requested address); "
                            "pass another --host or --port.",
    }
    results = run_cli_cases("jaxdigits.serve", "jaxdigits.serve:define_flags", [
        ([model, *args.split()], None) for args in cases] + [([f"--model={damaged}"], None), ([], None)])
    taken.close()
    for (args, sentence), result in zip(cases.items(), results):
        assert (result.returncode, result.stderr) == (2, f"error: {sentence}\n"), args
    assert (results[-2].returncode, results[-2].stderr) == (2, f"error: {damaged}/model.jaxexport does not "
                                                            "match the digest in its manifest (damaged or "
                                                            "replaced); export the model again.\n")
    assert results[-1].stderr == "error: pass either --model=EXPORTED_FOLDER or --workdir=RUN_FOLDER.\n"
