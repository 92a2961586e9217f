"""The benchmark's results as text: one measurement as a table of name and value, weak scaling,
and the suite (models x batch sizes x dtypes x drivers) as one Markdown table."""


def _gb(n) -> str:
    return "n/a" if n is None else f"{n / 2 ** 30:.2f} GiB"


def _mfu(result: dict) -> str:
    if result.get("mfu") is None:
        return f"n/a ({result['peak_source']})"
    return (f"{100 * result['mfu']:.1f} % of {result['peak_tflops']:.3g} TFLOP/s "
            f"({result['peak_source']})")


def format_table(result: dict) -> str:
    """One `benchmark.benchmark` result, one line per figure."""
    rows = [
        ("model", f"{result['model']} (batch {result['batch_size']}, {result['optimizer']}, "
                  f"{result['dtype']})"),
        ("device", f"{result['backend']} {result['device']} x{result['device_count']}, "
                   f"{result['cpu_count']} CPUs"),
        ("driver", f"{result['driver']}, {result['steps_per_call']} steps per call"
                   + ("" if result["driver_chosen"] else f" (default: {result['driver_basis']})")),
        ("XLA options", ", ".join(f"{k}={v}" for k, v in result["compiler_options"].items())
                        or "none"),
        ("conv grads", "oneDNN (--cpu_conv)" if result["onednn_grads"] else "XLA"),
        ("compile", f"{result['compile_seconds']:.2f} s"
                    + (" (persistent cache on)" if result["compilation_cache"] else "")),
        ("step", f"{1e3 * result['step_seconds']:.2f} ms (min {1e3 * result['step_seconds_min']:.2f}, "
                 f"max {1e3 * result['step_seconds_max']:.2f})"),
        ("images/s", f"{result['images_per_second']:,.0f} on {result['devices']} device(s), "
                     f"{result['images_per_second_per_device']:,.0f} per device"),
        ("GFLOP/step", f"{result['gflops_per_step']:.3f} (XLA cost analysis)"),
        ("GFLOP/s", f"{result['achieved_gflops_per_second']:.1f}"),
        ("MFU", _mfu(result)),
        ("memory", f"program {_gb(result['program_bytes'])} (XLA memory analysis); peak "
                   f"{_gb(result['peak_memory_bytes'])} ({result['peak_memory_source']})"),
    ]
    if "epoch_seconds" in result:
        rows.append(("epochs", ", ".join(f"{s:.1f} s" for s in result["epoch_seconds"])
                     + f" ({result['epoch_examples']} images each)"))
    if result.get("profile_dir"):
        rows.append(("profile", f"{result['profile_steps']} steps traced in "
                                f"{result['profile_dir']} (TensorBoard or ui.perfetto.dev)"))
    rows.append(("versions", " ".join(f"{k} {v}" for k, v in result["versions"].items())))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def format_scaling(result: dict) -> str:
    """Weak scaling over 1, 2, 4, ... devices, one line each."""
    lines = [f"{'devices':>7}  {'batch':>6}  {'step ms':>8}  {'images/s':>9}  {'per device':>10}  "
             f"{'efficiency':>10}"]
    for r in result["scaling"]:
        lines.append(f"{r['devices']:>7}  {r['batch_size']:>6}  {1e3 * r['step_seconds']:>8.2f}  "
                     f"{r['images_per_second']:>9,.0f}  {r['images_per_second_per_device']:>10,.0f}  "
                     f"{100 * r['scaling_efficiency']:>9.1f}%")
    first = result["scaling"][0]
    lines.append(f"{first['model']}, {first['optimizer']}, driver {first['driver']} x"
                 f"{first['steps_per_call']}; {result['backend']} {result['device']}, "
                 f"{result['cpu_count']} CPUs, XLA_FLAGS={result['xla_flags']!r}")
    return "\n".join(lines)


SUITE_COLUMNS = ["model", "batch", "dtype", "driver", {"name": "compile s", "format": "{:.2f}"},
                 {"name": "ms per step", "format": "{:.2f}"}, "images/s",
                 {"name": "GFLOP/s", "format": "{:.1f}"}, {"name": "MFU %", "format": "{:.1f}"},
                 {"name": "program MiB", "format": "{:.1f}"}]


def suite_row(r: dict) -> list:
    """One suite measurement as a row of SUITE_COLUMNS."""
    mfu = None if r.get("mfu") is None else 100 * r["mfu"]
    program = None if r["program_bytes"] is None else r["program_bytes"] / 2 ** 20
    return [f"`{r['model']}`", r["batch_size"], r["dtype"], f"{r['driver']} x{r['steps_per_call']}",
            r["compile_seconds"], 1e3 * r["step_seconds"], round(r["images_per_second"]),
            r["achieved_gflops_per_second"], mfu, program]


def format_suite(rows: list[list]) -> str:
    """The suite's rows as a Markdown table (what results/render.py renders from its JSON)."""
    names = [c if isinstance(c, str) else c["name"] for c in SUITE_COLUMNS]
    formats = [None if isinstance(c, str) else c["format"] for c in SUITE_COLUMNS]
    cell = lambda v, f: "" if v is None else (f.format(v) if f else (f"{v:,}" if isinstance(v, int)
                                                                     else str(v)))
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(v, f) for v, f in zip(row, formats)) + " |" for row in rows]
    return "\n".join(lines)
