"""What `jaxdigits.serve` answers, apart from HTTP itself (`jaxdigits.httpserver`): routes, limits,
strict JSON and the prediction.

`GET /` the drawing page (and `/static/*`, its script and style, served from the package: no CDN),
`GET /healthz`, `GET /model` (the manifest), `POST /predict` with a JSON object holding either
`"image"` (28 rows of 28 numbers in [0, 1], light ink on dark, used as given) or `"png"` (a
`data:image/png;base64,...` drawing, turned into an MNIST-like 28x28 image first; see
`jaxdigits.preprocess`).

The work a request costs is bounded before it is done: the body by `max_body_bytes` (from its
Content-Length, unread), the decoded image by `max_pixels` (from the PNG's header), and the
requests being parsed, decoded and predicted by `max_inflight`, of which `workers` run at once;
beyond that a 503 with `Retry-After` comes at once. JSON is read strictly (UTF-8, finite numbers,
no NaN, no repeated keys, not nested deeply) and a model giving non-finite probabilities is a 500
that says so.
"""

import concurrent.futures
import contextlib
import datetime
import importlib.resources
import json
import sys
import threading
import time
from http import HTTPStatus
from typing import NamedTuple

import numpy as np

from jaxdigits import predictor as predictor_lib
from jaxdigits import preprocess

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
ROUTES = {"/": {"GET"}, "/healthz": {"GET"}, "/model": {"GET"}, "/predict": {"POST"},
          **{f"/static/{name}": {"GET"} for name in STATIC}}
MAX_DIGITS = 20  # Longer integers in a body are refused (Python's int() is quadratic in digits).
MAX_CONTAINERS = 1024  # '[' and '{' in a body: a 28x28 image needs 30; 1 MB of [[],...] is 20 MB parsed.


class Limits(NamedTuple):
    """What one server takes on at once; each is a flag of `python -m jaxdigits.serve`."""
    max_body_bytes: int = 1 << 20  # A 280x280 drawing as a PNG data URL is about 10-40 KB.
    max_pixels: int = preprocess.MAX_PIXELS  # Pixels of a PNG, read from its header.
    max_inflight: int = 32  # /predict requests read whole and admitted at once; beyond: 503.
    workers: int = 2  # Of those, how many parse, decode and predict at the same time.
    max_connections: int = 64  # Open connections; beyond: 503 from the accepting thread.
    request_timeout: float = 10.0  # Seconds for a whole request (line, headers, body) to arrive.


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


_LOG_LOCK = threading.Lock()


def log_line(text: str) -> None:
    """One timestamped line on stderr, whole (request threads would otherwise interleave)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _LOG_LOCK:
        sys.stderr.write(f"{stamp} {text}\n")
        sys.stderr.flush()


def shown(text: str, limit: int = 100) -> str:
    """`text` cut to `limit` characters, escaped if it holds control characters (log injection)."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text if text.isprintable() else ascii(text)


def _no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a JSON object repeats the key {shown(max(keys, key=keys.count))!r}")
    return dict(pairs)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer has {len(text)} digits, more than {MAX_DIGITS}")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"the number {shown(text, 20)} is too large for a float")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes):
    """The body as JSON, strictly: UTF-8, no NaN or Infinity, finite numbers, no repeated keys,
    and few arrays and objects (counted before parsing: nested empty arrays cost 20 bytes of
    memory per byte of body, and deep nesting recursion)."""
    containers = body.count(b"[") + body.count(b"{")
    if containers > MAX_CONTAINERS:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body has {containers} '[' and '{{' characters; "
                           f"a prediction needs far fewer (at most {MAX_CONTAINERS} are accepted).")
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body's JSON is nested too deeply.") from None
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON ({shown(str(e))}).") from None


class App:
    """What the handler needs: the model, the page's files, the limits and the log."""

    def __init__(self, model: predictor_lib.Predictor, limits: Limits = Limits(), log=log_line):
        self.model, self.limits, self.log = model, limits, log
        folder = importlib.resources.files("jaxdigits") / "static"
        self.static = {name: (folder / name).read_bytes() for name in STATIC}
        self.image_shape = model.image_shape  # (28, 28, 1)
        self.lock, self.admitted = threading.Lock(), 0
        # Heavy work runs on a fixed pool, not on the connections' threads: only these threads
        # ever hold a decoded image, so the allocator keeps at most `workers` arenas of them.
        self.pool = concurrent.futures.ThreadPoolExecutor(limits.workers, "predict")

    @contextlib.contextmanager
    def admit(self):
        """A place among `max_inflight`, or a 503 at once."""
        with self.lock:
            if self.admitted >= self.limits.max_inflight:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is busy ({self.admitted} "
                                   "predictions in flight); retry in a second.", {"Retry-After": "1"})
            self.admitted += 1
        try:
            yield
        finally:
            with self.lock:
                self.admitted -= 1

    def predict_body(self, body: bytes) -> dict:
        """The response to a POST /predict body read whole (RequestError for a bad one): parsed,
        decoded and predicted by one of the `workers`, once admitted."""
        with self.admit():
            return self.pool.submit(lambda: self.predict(parse_json(body))).result()

    def predict(self, request) -> dict:
        """The response to a parsed POST /predict body (raises RequestError for a bad one)."""
        if not isinstance(request, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object.")
        given = [key for key in ("image", "png") if key in request]
        if len(given) != 1 or set(request) - {"image", "png"}:
            raise RequestError(HTTPStatus.BAD_REQUEST, "the JSON object must have exactly one key, "
                               "'image' (28 rows of 28 numbers in [0, 1]) or 'png' (a PNG data URL).")
        start = time.perf_counter()
        try:
            if given[0] == "image":
                image = preprocess.parse_pixels(request["image"], self.image_shape[:2])
            else:
                image = preprocess.png_to_mnist(request["png"], self.limits.max_pixels)
        except preprocess.TooLarge as e:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e)) from None
        except preprocess.InputError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        ready = time.perf_counter()
        probs = self.model.predict(image[None])[0]  # [classes]
        done = time.perf_counter()
        if not np.isfinite(probs).all():
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "the model gave NaN or infinite "
                               "probabilities for this image; its parameters are broken.")
        label = int(probs.argmax())
        return {"label": label, "class_name": self.model.manifest["class_names"][label],
                "probabilities": [float(p) for p in probs],
                "image": np.round(image, 4).tolist(), "input": given[0],
                "ms": {"preprocess": 1e3 * (ready - start), "model": 1e3 * (done - ready)}}
