"""``kd-serve``: Pyserini 2.x's REST server (same API, config, API keys) plus ``mode=hybrid|rerank`` on a search.

Usage::

    kd-serve --config server.yaml [--host 127.0.0.1] [--port 8081] [--prebuilt-indexes]
    curl 'http://127.0.0.1:8081/v1/dl19-minilm/search?query=what+is+wifi&mode=hybrid&fusion=rrf'

Binds 127.0.0.1 unless ``--host`` says otherwise; API keys are the config's ``api_keys:`` list (clients send
``X-API-Key: KEY`` or ``Authorization: Bearer KEY``). See docs/serving.md. Pyserini 1.6 has no server: there the
command says so and exits with status 1.
"""

from __future__ import annotations

import click

from kd_pyserini.cli.options import KdCommand

NO_SERVER_ON_1X = ("kd-serve needs Pyserini 2.x's server (Python >= 3.12: pip install torch==2.14.1 && pip install "
                   "-e '.[test]'); Pyserini 1.6 has no REST or MCP server")


def build_app(config: str, prebuilt_indexes: bool = False):  # noqa: ANN201  (a FastAPI app)
    """The app ``kd-serve`` runs (what tests call directly).

    Raises:
        click.ClickException: on Pyserini 1.6, or a config Pyserini refuses (one line naming the file).
    """
    from kd_pyserini.pyserini_compat import is_pyserini2

    if not is_pyserini2():
        raise click.ClickException(NO_SERVER_ON_1X)
    from kd_pyserini.serve.app import create_app

    try:
        return create_app(config, no_prebuilt_indexes=not prebuilt_indexes)
    except ValueError as e:
        raise click.ClickException(f"{config}: {e}") from None


@click.command(name="kd-serve", cls=KdCommand)
@click.option("--config", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Pyserini's server config (YAML: indexes: {ALIAS: {path, index_type, encoder, base_index}}, "
                   "api_keys: [...]); a kd index may leave out encoder and base_index.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0 exposes the server to the network: set api_keys first).")
@click.option("--port", type=click.IntRange(1, 65535), default=8081, show_default=True)
@click.option("--prebuilt-indexes", is_flag=True,
              help="Also serve Pyserini's prebuilt indexes by name (downloads them; off: only the config's indexes).")
def main(config: str, host: str, port: int, prebuilt_indexes: bool) -> None:
    """Serve kd (and any Pyserini) indexes over Pyserini's REST API, plus mode=hybrid|rerank (docs/serving.md)."""
    app = build_app(config, prebuilt_indexes)
    import uvicorn

    uvicorn.run(app, host=host, port=port)


if __name__ == "__main__":
    main()
