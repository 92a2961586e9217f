"""HTTP for `jaxdigits.serve`: the standard library's threading server, with its edges closed.

A thread per connection, but never more than `max_connections` of them: beyond that the accepting
thread answers a 503 itself and closes. A connection has `request_timeout` seconds to deliver a
whole request (line, headers and body); a reaper thread sends a 408 to the ones that do not and
shuts them, so a client trickling bytes cannot hold a thread for good. Heavy work is bounded apart
from this, in `httpapi.App`. A client that hangs up costs one short log line, never a traceback;
an answer that cannot be JSON (NaN) becomes a 500 that is. The standard library is enough here:
requests are small, the jitted predictor takes about a millisecond, and it needs no dependency.
"""

import http.server
import json
import re
import socket
import sys
import threading
import time
from http import HTTPStatus

from jaxdigits import predictor as predictor_lib
from jaxdigits.httpapi import ROUTES, STATIC, App, Limits, RequestError, log_line, shown


def canned(status: HTTPStatus, message: str, extra: str = "") -> bytes:
    """A whole HTTP answer with a JSON error, for a socket no handler owns."""
    body = json.dumps({"error": message}) + "\n"
    return (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n{body}").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    """The routes of `App`: `make_handler` gives the class its `app` and socket timeout."""
    app = None  # An App, set by make_handler.
    server_version = "jaxdigits"
    default_request_version = "HTTP/1.0"  # Not 0.9: even a garbled request line gets a status line.

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
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route {shown(path)}; try GET /, GET /healthz, "
                                   "GET /model or POST /predict.")
            if self.command not in ROUTES[path]:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} accepts "
                                   f"{', '.join(sorted(ROUTES[path]))}, not {shown(self.command, 20)}.")
            if path == "/predict":
                body = self._read_body()
                self.server.request_read(self.connection)
                result = self.app.predict_body(body)
                self._note = f"label={result['label']}"
                self._send(HTTPStatus.OK, result)
                return
            self.server.request_read(self.connection)
            if path == "/healthz":
                self._send(HTTPStatus.OK, {"status": "ok", "model": self.app.model.manifest["model"]})
            elif path == "/model":
                self._send(HTTPStatus.OK, self.app.model.manifest)
            else:
                name = "index.html" if path == "/" else path.rsplit("/", 1)[1]
                self._send(HTTPStatus.OK, self.app.static[name], STATIC[name])
        except RequestError as e:
            self._send(e.status, {"error": str(e)}, headers=e.headers)
        except (ConnectionError, TimeoutError):
            raise  # The client's connection, not a bug: handle_one_request notes it.
        except Exception as e:  # A bug, not the client's fault: say so, keep serving.
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {type(e).__name__}: {e}"})

    def _read_body(self) -> bytes:
        """The whole body, once its headers say it is JSON of an acceptable size."""
        limit, lengths = self.app.limits.max_body_bytes, self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, "
                               "not a Transfer-Encoding.")
        if not lengths:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length header.")
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,30}", lengths[0].strip()):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {shown(', '.join(lengths), 40)!r} "
                               "is not one number.")
        self.close_connection = True  # Every early refusal below leaves the body unread.
        length = int(lengths[0])
        if length > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body is {length} bytes; at most {limit} are accepted.")
        kind, charset = self.headers.get_content_type(), str(self.headers.get_param("charset", "utf-8"))
        if "Content-Type" not in self.headers or kind != "application/json" or charset.lower() != "utf-8":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: "
                               "application/json (UTF-8).")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionResetError(f"the body ended after {len(body)} of {length} bytes")
        return body

    def send_error(self, code, message=None, explain=None):
        # Also what the base class calls for a malformed request line or headers.
        self.close_connection = True
        self._send(HTTPStatus(code), {"error": message or HTTPStatus(code).phrase})

    def _send(self, status: HTTPStatus, payload, content_type="application/json", headers=None):
        if not isinstance(payload, bytes):
            try:
                text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
            except ValueError:  # Never invalid JSON on the wire.
                status, text = HTTPStatus.INTERNAL_SERVER_ERROR, json.dumps(
                    {"error": "internal error: the answer held NaN or infinity, which JSON cannot carry."})
            payload = (text + "\n").encode()
        self._status, self._size = status.value, len(payload)
        headers = {"Content-Type": content_type, "Content-Length": str(len(payload)),
                   "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})}
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = ", ".join(sorted(ROUTES.get(self.path.split("?", 1)[0], ())))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def handle_one_request(self):
        self._status, self._size, self._note, start = None, 0, "", time.perf_counter()
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError) as e:  # The client hung up or stalled: one line.
            self.close_connection = True
            self._note = f"client gone: {shown(str(e) or type(e).__name__, 80)}"
        if (self._status is None and not self._note) or self.server.was_dropped(self.connection):
            return  # Nothing was asked, or the reaper logged the connection.
        request = (f"{shown(self.command, 20)} {shown(self.path)}" if getattr(self, "command", None)
                   else shown(getattr(self, "requestline", ""), 80) or "-")
        self.app.log(f"{self.client_address[0]} {request} {self._status or '-'} {self._size}B "
                     f"{1e3 * (time.perf_counter() - start):.1f}ms {self._note}".rstrip())

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass  # Flushing to a client that left.

    def log_request(self, code="-", size="-"):
        pass  # handle_one_request logs, once.

    def log_error(self, format, *args):
        self._note = f"client gone: {shown(format % args, 80)}"  # The base's "Request timed out".

    def log_message(self, format, *args):
        pass


def make_handler(app: App):
    """The request handler class serving `app`. Its socket timeout (each read or write) is a second
    longer than the reaper's deadline for the whole request, so that the reaper, which answers 408,
    comes first; the timeout still bounds writes to a client that does not read."""
    return type("AppHandler", (Handler,), {"app": app, "timeout": app.limits.request_timeout + 1})


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection, at most `max_connections`, each with `request_timeout` seconds to
    deliver its request whole (see the module's docstring)."""
    daemon_threads = True
    block_on_close = False  # Stopping never waits for a stalled client.
    request_queue_size = 128  # socketserver's default of 5 drops bursts of connections (1 s retries).

    def __init__(self, address, handler, limits: Limits, log=log_line):
        self.limits, self.log, self.lock, self.closing = limits, log, threading.Lock(), threading.Event()
        self.open = {}  # socket -> (client address, deadline for its request, None once read)
        self.dropped = set()  # sockets the reaper has timed out
        super().__init__(address, handler)  # Binds: an OSError if it cannot.

    def process_request(self, request, client_address):
        with self.lock:
            full = len(self.open) >= self.limits.max_connections
            if not full:
                self.open[request] = (client_address, time.monotonic() + self.limits.request_timeout)
        if not full:
            return super().process_request(request, client_address)
        self.log(f"{client_address[0]} refused: {self.limits.max_connections} connections open (503)")
        self.answer_and_shut(request, canned(HTTPStatus.SERVICE_UNAVAILABLE, "the server is busy "
                             "(too many connections); retry in a second.", "Retry-After: 1\r\n"), drain=True)
        self.shutdown_request(request)

    @staticmethod
    def answer_and_shut(sock, answer: bytes, drain: bool = False) -> None:
        """Best effort, never blocking: the answer sent (into an empty send buffer) and the socket
        shut; with `drain`, what the client sent is read first (a socket without a timeout only),
        so that closing it does not reset the connection before the answer arrives."""
        try:
            while drain and sock.recv(65536, socket.MSG_DONTWAIT):
                pass
        except OSError:
            pass
        try:
            sock.send(answer, socket.MSG_DONTWAIT)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def request_read(self, sock) -> None:
        """The handler has read its request whole: the reaper leaves it alone from now on."""
        with self.lock:
            if sock in self.open:
                self.open[sock] = (self.open[sock][0], None)

    def was_dropped(self, sock) -> bool:
        with self.lock:
            return sock in self.dropped

    def shutdown_request(self, request):
        with self.lock:
            self.open.pop(request, None)
            self.dropped.discard(request)
        super().shutdown_request(request)

    def reap(self) -> None:
        """Every quarter second: a 408 to each connection past its deadline, and shut it."""
        timeout = self.limits.request_timeout
        while not self.closing.wait(0.25):
            now = time.monotonic()
            with self.lock:
                late = [(sock, address) for sock, (address, deadline) in self.open.items()
                        if deadline is not None and deadline < now and sock not in self.dropped]
                self.dropped.update(sock for sock, _ in late)
            for sock, address in late:
                self.log(f"{address[0]} dropped: no whole request within {timeout:g} s (408)")
                self.answer_and_shut(sock, canned(HTTPStatus.REQUEST_TIMEOUT, "the request did not "
                                     f"arrive whole within {timeout:g} s."))

    def serve_forever(self, poll_interval=0.5):
        threading.Thread(target=self.reap, name="reaper", daemon=True).start()
        super().serve_forever(poll_interval)

    def server_close(self):
        self.closing.set()
        super().server_close()
        self.RequestHandlerClass.app.pool.shutdown(wait=False)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]  # One line, never socketserver's traceback.
        self.log(f"{client_address[0]} error: {type(error).__name__}: {shown(str(error), 200)}")


def make_server(model: predictor_lib.Predictor, host: str = "127.0.0.1", port: int = 0,
                limits: Limits = Limits(), log=log_line) -> Server:
    """A server for `model` (compiled for one image first); port 0 picks a free port."""
    predictor_lib.warm_up(model, 1)
    return Server((host, port), make_handler(App(model, limits, log)), limits, log)
