"""Compare runs: 2-4 runs side by side (bits, densities, curves, a summary of differences).

The selection lives in the URL (``?runs=a,b``) so a comparison can be shared. Runs of any
method and status mix; while one of them trains, the views refresh every few seconds.
"""

from dashboard.ui import compare
from dashboard.ui.state import page_setup

page_setup(
    "Compare runs",
    "Pick two to four runs: any models, methods or statuses. The URL keeps the choice.",
)
if choice := compare.choose_runs():
    compare.comparison(*choice)
