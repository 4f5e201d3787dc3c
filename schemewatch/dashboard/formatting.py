"""The one place data is made safe for Streamlit's markdown (and chart labels).

Every value that comes from the database (ids, states, districts, notes, user names, reasons,
error messages that quote them) goes through `escape_markdown` before it reaches `st.markdown`,
`st.caption`, `st.success`/`st.error` or a widget label. An imported CSV is hostile input: a
beneficiary id like `![t](http://host/b.png)` must show as those characters, never load an image
or become a link.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all
# turns off emphasis, links, images, raw HTML, entities, tables, Streamlit's :colour[...] and
# :emoji: directives and $math$, and breaks GFM's bare-URL autolinks (`http\:\/\/`, `www\.`).
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAKS = re.compile(r"[\r\n\t\f\v\u2028\u2029]+")


def escape_markdown(value: object) -> str:
    """Data as literal text inside markdown: one line, every markup character escaped."""
    if value is None:
        return ""
    text = _LINE_BREAKS.sub(" ", str(value))
    return _PUNCTUATION.sub(r"\\\1", text)


def escape_chart_label(value: object) -> str:
    """Data as a Plotly label: Plotly renders <a href>, <b>... in text, so angle brackets go."""
    if value is None:
        return ""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
