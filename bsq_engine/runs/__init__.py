"""Runs as a user sees them: the SQLite run store and its statuses, the runner that executes
one stored run, the background job manager, sweeps and export."""
