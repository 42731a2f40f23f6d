"""``python -m bsq_engine``: the command-line interface over the same engine and store."""
