"""Small helpers shared by the HTML pages bigvol writes (:mod:`bigvol.report` and
:mod:`bigvol.compare`): escaping text for HTML and embedding a matplotlib figure as PNG.

>>> escape('<a href="x">&</a>')
'&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;'
>>> data_uri(b"PNG")
'data:image/png;base64,UE5H'
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

__all__ = ["data_uri", "escape", "png_bytes"]


def escape(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values (quotes included)."""
    return html.escape(str(x), quote=True)


def png_bytes(fig) -> bytes:
    """A matplotlib Figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as an ``<img>`` source (base64 data URI): the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
