"""Sphinx configuration: MyST pages, API reference from Google-style docstrings."""

from __future__ import annotations

import inspect
import re
from typing import Any

import trio_resilience

project = "trio-resilience"
author = "trio-resilience contributors"
copyright = "2026, trio-resilience contributors"  # noqa: A001
release = trio_resilience.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Defaults as written in the source (``ExponentialBackoff()``), not as reprs that the
# signature parser cannot read: an unreadable signature is shown raw, with the
# ``~trio_resilience.Backoff`` markup left in it.
autodoc_preserve_defaults = True
# Types by their short names, linked: ``Backoff``, not ``trio_resilience._backoff.Backoff``.
autodoc_typehints_format = "short"
python_use_unqualified_type_names = True
# Show the alias, not the union it stands for.
autodoc_type_aliases = {"ExceptionSpec": "trio_resilience.ExceptionSpec"}
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "furo"
html_title = f"trio-resilience {release}"
suppress_warnings = ["myst.header"]


_PRIVATE_DEFAULT = re.compile(r"= (_[A-Z][A-Z0-9_]*)\b")


def _public_defaults(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str | None
) -> tuple[str, str | None] | None:
    """A default written as a private module constant is shown as its value's repr."""
    if not signature or "= _" not in signature:
        return None
    function = obj.__init__ if what in ("class", "exception") else obj
    namespace = getattr(inspect.unwrap(function), "__globals__", {})

    def public(match: re.Match[str]) -> str:
        value = namespace.get(match[1], None)
        return match[0] if value is None else f"= {value!r}"

    return _PRIVATE_DEFAULT.sub(public, signature), ret


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _public_defaults)
