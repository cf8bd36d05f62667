"""Griffe extension for the docs build: render Sphinx roles in geoparam's docstrings.

The docstrings follow torch's style and cross-reference with Sphinx roles (:func:`x`, :class:`x`,
:mod:`x`), which mkdocstrings' Google parser would print verbatim. This extension rewrites each
role before parsing: into a link when the target is documented on the API page (a ``::: target``
line of ``docs/api.md``), and into inline code otherwise (torch's objects, private helpers).
It is loaded from ``mkdocs.yml`` and is not part of the site.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?(?P<target>[^`]+)`")
_API_PAGE = Path(__file__).with_name("api.md")


@cache
def _documented() -> frozenset[str]:
    text = _API_PAGE.read_text(encoding="utf-8")
    return frozenset(re.findall(r"^::: *(\S+)", text, flags=re.MULTILINE))


def _replace(match: re.Match[str]) -> str:
    target = match.group("target")
    if target in _documented():
        return f"[`{target}`][{target}]"
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring once the object tree is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)
