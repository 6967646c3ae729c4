"""``python -m kd_pyserini.search``: the ``kd-search`` command (:mod:`kd_pyserini.cli.search`)."""

from kd_pyserini.cli.search import main

if __name__ == "__main__":
    main()
