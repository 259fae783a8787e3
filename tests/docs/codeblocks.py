"""Find the Python code blocks of a reST or Markdown file, and run them.

The convention (also in ``docs/contributing.rst``): every Python block runs,
in file order and one namespace per file, unless the line just before it
(blank lines aside) marks it not runnable, with a reason:

* reST: ``.. not-runnable: REASON`` before ``.. code-block:: python``
  (a reST comment, invisible in the built page);
* Markdown: ``<!-- not-runnable: REASON -->`` before a fence tagged
  ``python`` (an HTML comment, invisible on GitHub).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

RST_BLOCK = re.compile(r"^(?P<indent>\s*)\.\. code-block::\s*(?:python|py|python3)\s*$")
RST_MARK = re.compile(r"^\s*\.\. not-runnable:(?P<reason>.*)$")
MD_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?:python|py|python3)\s*$")
MD_MARK = re.compile(r"^\s*<!--\s*not-runnable:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One Python code block: where it is, its source, and whether it runs."""

    path: Path
    line: int  #: 1-based line of the block's first source line
    source: str
    skip_reason: str | None = None

    @property
    def first_line(self) -> str:
        """The block's first non-blank line, to name it."""
        return next((s.strip() for s in self.source.splitlines() if s.strip()), "")


def _marker(lines: list[str], index: int, pattern: re.Pattern[str]) -> str | None:
    """The reason of a not-runnable marker just above ``lines[index]``."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0:
        return None
    m = pattern.match(lines[i])
    return m.group("reason").strip() if m else None


def rst_blocks(path: Path) -> list[Block]:
    """The ``code-block:: python`` blocks of a reST file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = RST_BLOCK.match(lines[i])
        if m is None:
            i += 1
            continue
        reason = _marker(lines, i, RST_MARK)
        indent = len(m.group("indent"))
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith(":") and lines[j].strip() != "":
            j += 1  # directive options
        body: list[str] = []
        start = None
        while j < len(lines):
            text = lines[j]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            if start is None and text.strip():
                start = j + 1
            if start is not None:
                body.append(text)
            j += 1
        source = textwrap.dedent("\n".join(body)).rstrip() + "\n"
        blocks.append(Block(path, start or i + 1, source, reason))
        i = j
    return blocks


def md_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = MD_FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence = m.group("fence")
        reason = _marker(lines, i, MD_MARK)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        source = textwrap.dedent("\n".join(lines[i + 1 : j])).rstrip() + "\n"
        blocks.append(Block(path, i + 2, source, reason))
        i = j + 1
    return blocks


def blocks_of(path: Path) -> list[Block]:
    """The Python blocks of a ``.rst`` or ``.md`` file."""
    return md_blocks(path) if path.suffix == ".md" else rst_blocks(path)


def script_for(blocks: list[Block]) -> str:
    """A Python program that runs the runnable blocks in order, in one
    namespace, each compiled under its file and line, so a traceback
    points into the document."""
    parts = ["ns = {'__name__': '__docs__'}"]
    for block in blocks:
        if block.skip_reason is not None:
            continue
        padded = "\n" * (block.line - 1) + block.source
        parts.append(f"exec(compile({padded!r}, {str(block.path)!r}, 'exec'), ns)")
    return "\n".join(parts) + "\n"
