"""``python -m kd_pyserini.index``: the same as ``kd-index`` (:mod:`kd_pyserini.cli.index`)."""

from kd_pyserini.cli.index import main

if __name__ == "__main__":
    main()
