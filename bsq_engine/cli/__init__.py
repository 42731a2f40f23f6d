"""``python -m bsq_engine``: the command-line interface over the same engine and store.

``main`` (entry point, exit codes, pipe-safe stdout) -> ``parser`` (every command and flag)
-> one module per command group: ``train`` (train, resume, sweep), ``info`` (list, runs,
show), ``manage`` (export, delete), ``maintenance`` (store check/repair). ``settings`` turns
flags into a validated ``RunConfig``; ``format`` holds the tables, numbers and summaries.
"""
