"""The ``grace`` command line: thin entry points over the Python API.

Each area registers its commands from its own module (``grace.cli.<area>``) on the shared
``app``. Errors derived from :class:`grace.errors.GraceError` print one line and exit 2.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="grace",
    help="GRACE: quantization-aware distillation, real low-bit packing and fast inference for VLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Importing a module registers its commands on `app`.
    import grace.cli.eval_cmds  # noqa: F401  (eval score, eval run, eval list)
    import grace.cli.export_cmds  # noqa: F401  (export)
    import grace.cli.formats_cmds  # noqa: F401  (pack, inspect)
    import grace.cli.kernels_cmds  # noqa: F401  (kernels)
    import grace.cli.loader_cmds  # noqa: F401  (init-tiny, generate, chat)
    import grace.cli.quickstart_cmds  # noqa: F401  (quickstart)
    import grace.cli.train_cmds  # noqa: F401  (train, plot)


_register()


def main() -> None:  # pragma: no cover - console entry point wrapper
    from grace.errors import GraceError

    try:
        app()
    except GraceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
