"""A ``sequence-diagram`` directive: text in, inline SVG out, no JavaScript.

Mermaid would need mermaid.js (a CDN by default); this draws the few
sequence diagrams the docs need at build time, so the site works offline
and the diagrams stay editable text in the ``.rst`` source::

    .. sequence-diagram::
       :caption: B pings A directly: A's NAT drops it.

       participant B  "B (public)"
       participant RA "NAT of A"
       participant A  "A (LAN)"
       B -x RA : ping R:pA
       note RA : no mapping towards B: dropped
       A -> RA : an answer         # arrows may point either way
       A --> B : a dashed arrow (a reply)

Lines: ``participant ID "label"`` (in order, left to right), ``X -> Y :
text`` (solid, either direction), ``X --> Y : text`` (dashed), ``X -x Y : text`` (lost:
ends in a cross before Y), ``note X : text`` or ``note X,Y : text`` (a box
over one participant or spanning two), ``divider : text``. ``\\n`` in a
text breaks the line. ``#`` starts a comment.
"""

from __future__ import annotations

import html
import itertools
import re
import shlex
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.application import Sphinx

COLUMN = 190
MARGIN = 30
HEAD = 44
ROW = 34
LINE = 15
CHAR = 6.6  # average width of a 12px sans-serif character
_ids = itertools.count(1)

ARROW = re.compile(r"^(\w+)\s*(-x|-->|->)\s*(\w+)\s*:\s*(.*)$")


class DiagramError(ValueError):
    """A line of a diagram that does not parse."""


def _text(x: float, y: float, text: str, anchor: str = "middle", cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.0f}" y="{y:.0f}" text-anchor="{anchor}"{attr}>{html.escape(text)}</text>'


def render(source: str, title: str = "") -> str:
    """Render a diagram's text as an SVG document fragment."""
    participants: dict[str, str] = {}
    steps: list[tuple[str, Any]] = []
    for lineno, raw in enumerate(source.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("participant "):
            parts = shlex.split(line)
            if len(parts) not in (2, 3):
                raise DiagramError(f'line {lineno}: participant ID "label"')
            participants[parts[1]] = parts[2] if len(parts) == 3 else parts[1]
            continue
        if line.startswith("note "):
            who, _, text = line[5:].partition(":")
            ids = [w.strip() for w in who.split(",")]
            steps.append(("note", (ids, text.strip())))
            continue
        if line.startswith("divider"):
            steps.append(("divider", line.partition(":")[2].strip()))
            continue
        m = ARROW.match(line)
        if m is None:
            raise DiagramError(f"line {lineno}: cannot parse {line!r}")
        a, kind, b, text = m.groups()
        steps.append(("arrow", (a, kind, b, text.strip())))
    for kind, step in steps:
        names = step[0] if kind == "note" else [step[0], step[2]] if kind == "arrow" else []
        for name in names:
            if name not in participants:
                raise DiagramError(f"unknown participant {name!r}")
    x = {pid: MARGIN + COLUMN / 2 + i * COLUMN for i, pid in enumerate(participants)}
    width = MARGIN * 2 + COLUMN * len(participants)
    uid = f"sd{next(_ids)}"
    body: list[str] = []
    y = HEAD + 22
    for kind, step in steps:
        if kind == "arrow":
            a, style, b, text = step
            lines = text.split("\\n")
            y += LINE * (len(lines) - 1)
            x1, x2 = x[a], x[b]
            mid = (x1 + x2) / 2
            for i, t in enumerate(lines):
                body.append(_text(mid, y - 6 - LINE * (len(lines) - 1 - i), t))
            dash = ' stroke-dasharray="6 4"' if style == "-->" else ""
            if style == "-x":
                end = x2 - (x2 - x1) * 0.18
                body.append(f'<line x1="{x1:.0f}" y1="{y}" x2="{end:.0f}" y2="{y}" class="msg"/>')
                body.append(
                    f'<path d="M{end - 6:.0f},{y - 6} l12,12 M{end - 6:.0f},{y + 6} l12,-12"'
                    ' class="lost"/>'
                )
            else:
                body.append(
                    f'<line x1="{x1:.0f}" y1="{y}" x2="{x2:.0f}" y2="{y}" class="msg"{dash}'
                    f' marker-end="url(#{uid}-arrow)"/>'
                )
            y += ROW
        elif kind == "note":
            ids, text = step
            lines = text.split("\\n")
            left = min(x[i] for i in ids) - COLUMN / 2 + 10
            right = max(x[i] for i in ids) + COLUMN / 2 - 10
            need = max(len(t) for t in lines) * CHAR + 16  # an estimate: no fonts here
            if need > right - left:
                grow = (need - (right - left)) / 2
                left, right = left - grow, right + grow
                if left < 4:
                    left, right = 4, right + 4 - left
                if right > width - 4:
                    left, right = max(4, left - (right - width + 4)), width - 4
            h = LINE * len(lines) + 10
            top = y - 16
            body.append(
                f'<rect x="{left:.0f}" y="{top}" width="{right - left:.0f}" height="{h}"'
                ' rx="4" class="note"/>'
            )
            for i, t in enumerate(lines):
                body.append(_text((left + right) / 2, top + 17 + LINE * i, t, cls="notetext"))
            y += h + 12
        else:
            body.append(
                f'<line x1="{MARGIN}" y1="{y - 4}" x2="{width - MARGIN}" y2="{y - 4}"'
                ' class="divider"/>'
            )
            body.append(_text(width / 2, y - 10, step, cls="dividertext"))
            y += ROW
    height = y + 4
    heads: list[str] = []
    for pid, label in participants.items():
        cx = x[pid]
        heads.append(
            f'<line x1="{cx:.0f}" y1="{HEAD}" x2="{cx:.0f}" y2="{height - 6}" class="life"/>'
        )
        heads.append(
            f'<rect x="{cx - COLUMN / 2 + 12:.0f}" y="6" width="{COLUMN - 24}"'
            f' height="{HEAD - 12}" rx="5" class="actor"/>'
        )
        heads.append(_text(cx, 29, label, cls="actortext"))
    style = (
        "text{font:13px system-ui,sans-serif;fill:currentColor}"
        ".actortext{font-weight:600}.notetext,.dividertext{font-size:12px}"
        ".life{stroke:currentColor;stroke-opacity:.35;stroke-dasharray:3 4}"
        ".actor{fill:none;stroke:currentColor;stroke-width:1.5}"
        ".msg{stroke:currentColor;stroke-width:1.5}"
        ".lost{stroke:#d33;stroke-width:2.5;fill:none}"
        ".note{fill:#fdf1c7;fill-opacity:.95;stroke:#c9a227}"
        ".notetext{fill:#222}"
        ".divider{stroke:currentColor;stroke-opacity:.3}"
    )
    label = html.escape(title or "sequence diagram", quote=True)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f"<style>{style}</style>"
        f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        f'markerHeight="8" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="currentColor"/>'
        f"</marker></defs>" + "".join(heads) + "".join(body) + "</svg>"
    )


class SequenceDiagram(Directive):
    """The ``sequence-diagram`` directive (see the module docstring)."""

    has_content = True
    option_spec: ClassVar[dict[str, Any]] = {"caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        """Render the content; a parse error is a build error."""
        caption = self.options.get("caption", "")
        try:
            svg = render("\n".join(self.content), caption)
        except DiagramError as err:
            raise self.error(f"sequence-diagram: {err}") from err
        figure = nodes.figure(classes=["seqdiagram"])
        figure += nodes.raw("", svg, format="html")
        if caption:
            parsed, _ = self.state.inline_text(caption, self.lineno)
            figure += nodes.caption(caption, "", *parsed)
        return [figure]


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("sequence-diagram", SequenceDiagram)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
