"""Sphinx configuration of the docs site (``python -m sphinx -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airflow_provider_openhands import __version__

project = "airflow-provider-openhands"
author = "The airflow-provider-openhands authors"
copyright = "2026, The airflow-provider-openhands authors"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "screenshots/*.md"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3  # "#some-heading" links inside a page, as on GitHub

# The reference documents what the provider defines, in source order, without Airflow's own members.
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "description"
autodoc_class_signature = "separated"
# Optional extras the reference imports when installed; without them these modules still document.
autodoc_mock_imports = ["airflow.providers.common.ai", "airflow.providers.openlineage"]

html_theme = "furo"
html_title = f"airflow-provider-openhands {release}"
