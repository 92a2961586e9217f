"""Serve a model over HTTP: a page to draw digits on, and a JSON prediction API.

    python -m jaxdigits.serve --model=model/            # written by python -m jaxdigits.export
    python -m jaxdigits.serve --workdir=runs/mlp        # export a run in memory and serve it

The routes, the JSON and the limits on work are `jaxdigits.httpapi`'s; the connections (at most
`--max_connections`, each with `--request_timeout` seconds to send its request) are
`jaxdigits.httpserver`'s. The model is verified as it loads (`jaxdigits.predictor`): a damaged or
tampered folder, or parameters that are not finite, stop the server with one sentence. Every flag
is checked the same way before anything starts.
"""

import signal
import time

import numpy as np

from jaxdigits import predictor as predictor_lib
from jaxdigits.httpapi import Limits, log_line
from jaxdigits.httpserver import Server, make_server

__all__ = ["Limits", "Server", "load_model", "make_server", "main"]

DEFAULT = Limits()
HELP = {
    "max_body_bytes": "Larger request bodies get a 413, unread.",
    "max_pixels": "PNGs with more pixels (read from their header) get a 413, undecoded.",
    "max_inflight": "Predictions admitted at once (parsing, decoding, predicting or waiting for a "
                    "worker); beyond: 503 with Retry-After.",
    "workers": "Predictions that parse, decode and run at the same time.",
    "max_connections": "Open connections; beyond: 503 with Retry-After.",
    "request_timeout": "Seconds a connection has to send its whole request; then 408 and closed.",
}


def load_model(model_dir=None, workdir=None, which="best"):
    """A Predictor from an exported folder, or from a run exported in memory (needs training code)."""
    if workdir:
        from jaxdigits import export

        return predictor_lib.from_parts(*export.export_run(workdir, which=which))
    return predictor_lib.load(model_dir)


def limits_from_flags(flags_) -> Limits:
    """The limits the flags give, each checked (UserError: one sentence)."""
    from jaxdigits.errors import UserError

    if not 0 <= flags_.port <= 65535:
        raise UserError(f"--port must be 0 to 65535 (0: any free port), got {flags_.port}.")
    if not flags_.host.strip():
        raise UserError("--host is empty; pass 127.0.0.1 (this machine) or 0.0.0.0 (every interface).")
    if bool(flags_.model) == bool(flags_.workdir):
        raise UserError("pass either --model=EXPORTED_FOLDER or --workdir=RUN_FOLDER.")
    values = {name: flags_[name].value for name in DEFAULT._fields}
    for name, value in values.items():
        if not 0 < value < float("inf"):
            raise UserError(f"--{name} must be a positive number, got {value:g}.")
    if values["workers"] > values["max_inflight"]:
        raise UserError(f"--workers ({values['workers']}) must be at most --max_inflight "
                        f"({values['max_inflight']}).")
    return Limits(**values)


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, docker stop) stops as cleanly as Ctrl-C.


def main(argv):
    # absl alone, not jaxdigits.cli: that imports the training stack (flax, optax, orbax), 36 MB
    # and half a second that a server of an exported model does not need.
    from absl import flags, logging

    from jaxdigits.errors import UserError

    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; flags take the form --name=value.")
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
    limits = limits_from_flags(FLAGS)
    try:
        model = load_model(FLAGS.model, FLAGS.workdir, FLAGS.which)
    except predictor_lib.ModelError as e:
        raise UserError(str(e)) from None
    start = time.perf_counter()
    try:
        server = make_server(model, FLAGS.host, FLAGS.port, limits)
    except (OSError, OverflowError) as e:
        raise UserError(f"cannot listen on {FLAGS.host}:{FLAGS.port} ({getattr(e, 'strerror', None) or e}); "
                        "pass another --host or --port.") from None
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
             f"(at most {limits.max_inflight} predictions in flight, {limits.workers} at once; Ctrl-C stops)")
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log_line("stopped")
    finally:
        server.server_close()


def define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "A folder written by python -m jaxdigits.export.")
    flags.DEFINE_string("workdir", None, "A run folder to export in memory and serve instead.")
    flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint of --workdir.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface).")
    flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
    for name, default in DEFAULT._asdict().items():
        define = flags.DEFINE_float if isinstance(default, float) else flags.DEFINE_integer
        define(name, default, HELP[name])


if __name__ == "__main__":
    from absl import app

    from jaxdigits.errors import parse_flags, report_user_errors

    define_flags()
    app.run(report_user_errors(main), flags_parser=parse_flags)
