"""``python -m bsq_engine``: the command-line interface (see ``bsq_engine.cli.main``)."""

from bsq_engine.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
