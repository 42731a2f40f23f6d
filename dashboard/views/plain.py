"""Text that users or URLs supply, made inert before it meets Markdown or HTML.

Run names, dataset folder names, owners and every ``?run=`` / ``?runs=`` value can hold
anything, e.g. ``x` ![t](http://host/x.png) [login](http://host/login)``. Streamlit renders
Markdown in titles, captions, alerts and labels, and Plotly renders a subset of HTML
(``<a href>``, ``<b>``...) in hover text, tick labels and annotations. So:

- ``md(text)``: for any Streamlit string that is Markdown (backslash before every ASCII
  punctuation character, which CommonMark then prints literally; this also breaks
  ``:material/...:`` icons and ``:red[...]`` colour directives; newlines become spaces).
- ``html(text)``: for Plotly labels and hover text (entities, so ``<a>`` prints as text).

Prefer ``st.text`` / ``st.code`` / DataFrame cells, which never render Markup, where a page
shows a bare value; use these where a value sits inside a sentence.
"""

from __future__ import annotations

import html as _html
import string

__all__ = ["html", "md", "short", "template"]

_MD_SPECIAL = frozenset(string.punctuation)
_MAX = 200


def md(text: object) -> str:
    """``text`` as a literal in Markdown.

    >>> md("x` ![t](http://h/x.png)")
    'x\\\\` \\\\!\\\\[t\\\\]\\\\(http\\\\:\\\\/\\\\/h\\\\/x\\\\.png\\\\)'
    """
    flat = " ".join(str(text).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in flat)


def html(text: object) -> str:
    """``text`` as a literal in HTML (Plotly labels).

    >>> html('<a href="http://h">login</a>')
    '&lt;a href=&quot;http://h&quot;&gt;login&lt;/a&gt;'
    """
    return _html.escape(" ".join(str(text).split()), quote=True)


def template(text: object) -> str:
    """``text`` inside a Plotly ``hovertemplate``: HTML-escaped, and ``%{`` broken up so a
    name cannot pull in trace values.

    >>> template("a %{y} <b>")
    'a %&#123;y} &lt;b&gt;'
    """
    return html(text).replace("%{", "%&#123;")


def short(text: object, limit: int = _MAX) -> str:
    """At most ``limit`` characters (an ellipsis marks the cut): a pasted essay stays a line."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"
