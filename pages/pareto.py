"""Pareto frontier: accuracy against size for every finished run of one model/dataset pair.

Running runs move live (a fragment polls while any run of the pair is active); clicking a
point opens that run below. Published figures of the paper are drawn as labelled lines.
"""

from dashboard.ui import pareto
from dashboard.ui.state import page_setup

page_setup(
    "Pareto frontier",
    "Every finished run of one model and dataset: accuracy against size. A run is on the "
    "frontier when no other run is both smaller and more accurate.",
)
if choice := pareto.choose_pair():
    pareto.frontier(*choice)
