"""``python -m kd_pyserini.train ...`` = ``kd-train ...`` (also what ``torchrun -m kd_pyserini.train`` runs)."""

from kd_pyserini.cli.train import main

if __name__ == "__main__":
    main()
