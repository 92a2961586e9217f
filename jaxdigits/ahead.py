"""Compiling a run's programs ahead, on a second thread, while the first loads and initialises.

A run's programs (the train step, the epoch order, the scorer and its batch gathers) are
otherwise compiled in turn at their first calls, after the data is loaded and the parameters are
initialised. Compiled on a second thread, they overlap that work: 0.3 s of the speedrun's 8.4 s
on a 2-core CPU, where XLA's compiler already keeps both cores busy, more where cores are free
(BUILD_NOTES.md, "The speedrun"). `Ahead(plan)` runs `plan(ahead)` on a worker
thread, where `ahead.compile(fn, *args, **static)` lowers and compiles the jitted `fn` for
abstract arguments (`jax.ShapeDtypeStruct`s, or values). That fills `fn`'s own jit cache, so the
first real call with arguments of those shapes finds its program ready and compiles nothing
(`tests/test_ahead.py` counts the compiles). Call `wait()` before the first real call: a call
that came first would compile the same program a second time.

A program that fails to compile ahead is left alone: its first real call compiles it again and
reports the error there, among the run's usual messages.
"""

import concurrent.futures


class Ahead:
    """`plan(self)` run on one worker thread; `wait()` for it. No plan (None): no thread."""

    def __init__(self, plan=None):
        self.compiled = 0
        self.pool = self.job = None
        if plan is not None:
            self.pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="jaxdigits-ahead")
            self.job = self.pool.submit(plan, self)

    def compile(self, fn, *args, **static) -> None:
        """Compiles the jitted `fn` for `args` (abstract or concrete) and keyword `static` ones."""
        try:
            fn.lower(*args, **static).compile()
            self.compiled += 1
        except Exception:  # The first real call reports it (see the docstring).
            pass

    def wait(self) -> int:
        """Waits for the plan; returns how many programs it compiled."""
        if self.job is None:
            return 0
        try:
            self.job.result()
        except Exception:  # As in `compile`: the real calls compile what is left.
            pass
        self.pool.shutdown()
        return self.compiled
