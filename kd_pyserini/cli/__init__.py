"""The command-line tools: thin click commands over the plain functions of the pipeline's rooms.

Every command is built on :class:`~kd_pyserini.cli.options.KdCommand` / ``KdGroup``, shares the option vocabulary
of :mod:`kd_pyserini.cli.options`, and maps any :class:`~kd_pyserini.errors.KdError` (and the built-in errors the
library raises for bad input) to one ``Error: ...`` line and exit status 1. Nothing outside this folder imports
click.
"""
