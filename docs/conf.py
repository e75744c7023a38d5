"""Sphinx configuration: MyST pages, API reference from Google-style docstrings."""

from __future__ import annotations

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
autodoc_default_options = {"members": True, "show-inheritance": True}
html_theme = "furo"
html_title = f"trio-resilience {release}"
suppress_warnings = ["myst.header"]
