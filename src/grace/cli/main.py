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
    from grace.cli import formats_cmds  # noqa: F401  (pack, inspect)
    from grace.cli import kernels_cmds  # noqa: F401  (kernels)


_register()


def main() -> None:  # pragma: no cover - console entry point wrapper
    from grace.errors import GraceError

    try:
        app()
    except GraceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
