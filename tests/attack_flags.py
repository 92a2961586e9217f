"""Flag definitions for `run_cli_cases` that match what `cli.run` defines: the flags every
command shares (`cli.define_common_flags`, where this version has it), then the program's own.
Used by test_attack_cli.py as `"attack_flags:NAME"`-style defines ("tests.attack_flags:train")."""

from jaxdigits import cli


def _common() -> None:
    getattr(cli, "define_common_flags", lambda: None)()


def train() -> None:
    _common()
    cli.define_train_flags()


def evaluate() -> None:
    from jaxdigits import evaluate as program

    _common()
    program.define_flags()


def export() -> None:
    from jaxdigits import export as program

    _common()
    program.define_flags()


def benchmark() -> None:
    from jaxdigits import benchmark as program

    _common()
    program.define_flags()
