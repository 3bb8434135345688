"""Griffe extension: render the reST bits of topkloss's numpy docstrings as Markdown.

The docstrings follow the numpydoc convention, which writes math and cross-references in
reStructuredText (``:math:`...```, ``.. math::`` blocks, ``:func:`log_esf```).
mkdocstrings renders docstrings as Markdown, so this extension rewrites those constructs,
on the documentation side only, into what ``pymdownx.arithmatex`` and mkdocs-autorefs
understand:

- ``:math:`x``` becomes ``$x$`` (inline math);
- a ``.. math::`` directive (its first line and the indented lines below it) becomes a
  ``$$ ... $$`` block;
- ``x : array, shape (n,)`` in a parameter list becomes ``x : array of shape (n,)`` (the
  former would be shown as the tuple ``(array, shape(n,))``);
- ``:func:`name``` (and ``:class:``, ``:meth:``, ``:attr:``, ``:mod:``, ``:data:``,
  ``:obj:``, ``:exc:``) becomes a cross-reference ``[`name`][topkloss.name]``; a dotted
  name outside topkloss (``sklearn.metrics.top_k_accuracy_score``) becomes inline code, as
  the site is built offline without other projects' inventories.
"""

from __future__ import annotations

import re

import griffe

_MATH_ROLE = re.compile(r":math:`([^`]*)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc):`~?([^`<>]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.groups()
        body = [first.strip()] if first.strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        body = [b for b in body if b]
        out += ["", f"{indent}$$", *(f"{indent}{b}" for b in body), f"{indent}$$", ""]
    return "\n".join(out)


def _inline_math(match: re.Match) -> str:
    return "$" + " ".join(match.group(1).split()) + "$"


def _xref(match: re.Match) -> str:
    name = match.group(1).strip()
    if "." not in name:
        name = f"topkloss.{name}"
    if name.split(".")[0] != "topkloss":  # another library: no inventory offline, plain code
        return f"`{name}`"
    return f"[`{name.rsplit('.', 1)[-1]}`][{name}]"


_ARRAY_SHAPE = re.compile(r"^(\s*\w[\w, ]* : |\s*)array, shape \(", re.M)


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST math and roles rewritten as Markdown."""
    # "x : array, shape (n,)" would be parsed as a tuple expression and shown as
    # "(array, shape(n,))": say "array of shape (n,)", which is shown as written.
    text = _ARRAY_SHAPE.sub(r"\1array of shape (", text)
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(_inline_math, text)
    return _XREF_ROLE.sub(_xref, text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
