"""Serve a model over HTTP: a page to draw digits on, and a JSON prediction API.

    python -m jaxdigits.serve --model=model/            # written by python -m jaxdigits.export
    python -m jaxdigits.serve --workdir=runs/mlp        # export a run in memory and serve it

Routes: `GET /` the drawing page (and `/static/*`, its script and style, served from the package:
no CDN), `GET /healthz`, `GET /model` (the manifest), `POST /predict` with a JSON object holding
either `"image"` (28 rows of 28 numbers in [0, 1], light ink on dark, used as given) or `"png"`
(a `data:image/png;base64,...` drawing, turned into an MNIST-like 28x28 image first; see
`jaxdigits.preprocess`). Every bad request gets a 4xx and a one-line JSON `{"error": ...}`, and
every request one log line. The standard library's threading server is enough here: requests are
small, the jitted predictor takes about a millisecond, and it needs no dependency.
"""

import datetime
import http.server
import importlib.resources
import json
import signal
import sys
import threading
import time
from http import HTTPStatus

import numpy as np

from jaxdigits import predictor as predictor_lib
from jaxdigits import preprocess

MAX_BODY_BYTES = 1 << 20  # A 280x280 drawing as a PNG data URL is about 10-40 KB.
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
ROUTES = {"/": {"GET"}, "/healthz": {"GET"}, "/model": {"GET"}, "/predict": {"POST"},
          **{f"/static/{name}": {"GET"} for name in STATIC}}


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


_LOG_LOCK = threading.Lock()


def log_line(text: str) -> None:
    """One timestamped line on stderr, whole (request threads would otherwise interleave)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with _LOG_LOCK:
        sys.stderr.write(f"{stamp} {text}\n")
        sys.stderr.flush()


class App:
    """What the handler needs: the model, the page's files, the limits and the log."""

    def __init__(self, model: predictor_lib.Predictor, max_body_bytes: int = MAX_BODY_BYTES, log=log_line):
        self.model, self.max_body_bytes, self.log = model, max_body_bytes, log
        folder = importlib.resources.files("jaxdigits") / "static"
        self.static = {name: (folder / name).read_bytes() for name in STATIC}
        self.image_shape = model.image_shape  # (28, 28, 1)

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
                image = preprocess.png_to_mnist(request["png"])
        except preprocess.InputError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None
        ready = time.perf_counter()
        probs = self.model.predict(image[None])[0]  # [classes]
        done = time.perf_counter()
        label = int(probs.argmax())
        return {"label": label, "class_name": self.model.manifest["class_names"][label],
                "probabilities": [float(p) for p in probs],
                "image": np.round(image, 4).tolist(), "input": given[0],
                "ms": {"preprocess": 1e3 * (ready - start), "model": 1e3 * (done - ready)}}


class Handler(http.server.BaseHTTPRequestHandler):
    """The routes of `App`: `make_handler` gives the class its `app`."""
    app = None  # An App, set by make_handler.
    server_version = "jaxdigits"
    timeout = 30  # seconds a client may stall mid-request before its connection is dropped

    def __getattr__(self, name):
        # The base class answers a method it has no do_METHOD for with 501; any method is
        # the client's mistake here, so every unknown one gets a 405 instead.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        path = self.path.split("?", 1)[0]
        try:
            if path not in ROUTES:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route {path}; try GET /, GET /healthz, "
                                   "GET /model or POST /predict.")
            if self.command not in ROUTES[path]:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED,
                                   f"{path} accepts {', '.join(sorted(ROUTES[path]))}, not {self.command}.")
            if path == "/predict":
                result = self.app.predict(self._read_json())
                self._note = f"label={result['label']}"
                self._send(HTTPStatus.OK, result)
            elif path == "/healthz":
                self._send(HTTPStatus.OK, {"status": "ok", "model": self.app.model.manifest["model"]})
            elif path == "/model":
                self._send(HTTPStatus.OK, self.app.model.manifest)
            else:
                name = "index.html" if path == "/" else path.rsplit("/", 1)[1]
                self._send(HTTPStatus.OK, self.app.static[name], STATIC[name])
        except RequestError as e:
            self._send(e.status, {"error": str(e)})
        except Exception as e:  # A bug, not the client's fault: say so, keep serving.
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _read_json(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked.")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length header.")
        if not length.isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {length!r} is not a number.")
        if int(length) > self.app.max_body_bytes:
            self.close_connection = True  # The body is never read.
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body is {length} bytes; at most {self.app.max_body_bytes} are accepted.")
        body = self.rfile.read(int(length))
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON ({e}).") from None

    def send_error(self, code, message=None, explain=None):
        # Also what the base class calls for a malformed request line or headers.
        self.close_connection = True
        self._send(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def _send(self, status: HTTPStatus, payload, content_type="application/json"):
        if not isinstance(payload, bytes):
            payload = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
        self._status, self._size = status.value, len(payload)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ", ".join(sorted(ROUTES.get(self.path.split("?", 1)[0], ()))))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def handle_one_request(self):
        self._status, self._size, self._note, start = None, 0, "", time.perf_counter()
        super().handle_one_request()
        if self._status is not None:  # One line per request, errors included.
            request = f"{self.command} {self.path}" if self.command else repr(self.requestline[:80])
            self.app.log(f"{self.client_address[0]} {request} {self._status} {self._size}B "
                    f"{1e3 * (time.perf_counter() - start):.1f}ms {self._note}".rstrip())

    def log_request(self, code="-", size="-"):
        pass  # handle_one_request logs, once.

    def log_message(self, format, *args):
        pass


def make_handler(app: App):
    """The request handler class serving `app`."""
    return type("AppHandler", (Handler,), {"app": app})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default of 5 drops bursts of connections (1 s retries).


def make_server(model: predictor_lib.Predictor, host: str = "127.0.0.1", port: int = 0,
                **app_options) -> Server:
    """A threading server for `model` (compiled for one image first); port 0 picks a free port."""
    predictor_lib.warm_up(model, 1)
    return Server((host, port), make_handler(App(model, **app_options)))


def load_model(model_dir=None, workdir=None, which="best"):
    """A Predictor from an exported folder, or from a run exported in memory (needs training code)."""
    if workdir:
        from jaxdigits import export

        return predictor_lib.from_parts(*export.export_run(workdir, which=which))
    return predictor_lib.load(model_dir)


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, docker stop) stops as cleanly as Ctrl-C.


def main(argv):
    from absl import app, flags, logging

    from jaxdigits.errors import UserError

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    if bool(FLAGS.model) == bool(FLAGS.workdir):
        raise UserError("pass either --model=EXPORTED_FOLDER or --workdir=RUN_FOLDER.")
    try:
        model = load_model(FLAGS.model, FLAGS.workdir, FLAGS.which)
    except predictor_lib.ModelError as e:
        raise UserError(str(e)) from None
    start = time.perf_counter()
    try:
        server = make_server(model, FLAGS.host, FLAGS.port, max_body_bytes=FLAGS.max_body_bytes)
    except OSError as e:
        raise UserError(f"cannot listen on {FLAGS.host}:{FLAGS.port} ({e.strerror or e}); "
                        "pass another --port.") from None
    warm = time.perf_counter() - start
    zeros, times = np.zeros((1, *model.image_shape), np.float32), []
    for _ in range(20):
        t0 = time.perf_counter()
        model.predict(zeros)
        times.append(1e3 * (time.perf_counter() - t0))
    one = float(np.median(times))
    m, (host, port) = model.manifest, server.server_address[:2]
    log_line(f"{m['model']} on {m['dataset']} (test accuracy {100 * m['accuracy']['test']:.2f}% at export), "
             f"compiled in {warm:.2f} s, one prediction {one:.2f} ms (median of 20); serving http://{host}:{port}/ "
             "(Ctrl-C stops)")
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log_line("stopped")
    finally:
        server.server_close()


if __name__ == "__main__":
    from absl import app, flags

    from jaxdigits.errors import report_user_errors

    flags.DEFINE_string("model", None, "A folder written by python -m jaxdigits.export.")
    flags.DEFINE_string("workdir", None, "A run folder to export in memory and serve instead.")
    flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of --workdir.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
    flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
    flags.DEFINE_integer("max_body_bytes", MAX_BODY_BYTES, "Larger request bodies get a 413.")
    app.run(report_user_errors(main))
