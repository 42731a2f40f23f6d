"""Learn: BSQ in five steps a teacher can project (``?step=1..5``, ``?run=<id>``, ``?present=1``).

The lesson's pieces live in ``dashboard.ui.learn``, its numbers in ``dashboard.views.learn``.
"""

from dashboard.ui import learn
from dashboard.ui.state import page_setup

page_setup()
learn.init_state()
step, present = learn.header()
learn.render_step(step, present)
