"""Sphinx configuration for motune's documentation (built by ``bash scripts/docs``).

Offline by design: no intersphinx (it would fetch inventories), external links are never
fetched (``scripts/check_links.py`` checks the internal ones in the built HTML), and the
tutorials are executed by myst-nb with ``HF_HUB_OFFLINE=1``.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import motune  # noqa: E402

project = "motune"
author = "the motune authors"
copyright = "the motune authors, MIT licence"
release = version = motune.__version__

extensions = [
    "sphinx.ext.autodoc",
    "myst_nb",
    "sphinx_copybutton",
    "sphinx_design",
    "motune_cli",       # _ext/motune_cli.py: the CLI reference, generated from motune.cli.app
    "motune_docstrings",  # _ext/motune_docstrings.py: the docstrings' parameter lists, refs by defining module
    "motune_api_check",  # _ext/motune_api_check.py: every name in motune.__all__ is documented
    "motune_notebook",  # _ext/motune_notebook.py: a notebook's cells on a page, not executed
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "**/*.db", "**/*-artifacts"]
root_doc = "index"

# Every cross-reference is checked; names of other projects cannot be resolved offline
# (intersphinx would download their inventories), so only those are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(optuna|pandas|pd|numpy|np|sklearn|torch|transformers|fairlearn|plotly|go|mlflow|"
               r"typer|click|rich|sqlalchemy|accelerate|datasets|ray|collections|typing|pathlib|os)(\..*)?"),
    (r"py:.*", r"(Path|Callable|Iterable|Iterator|Sequence|Mapping|Any|Literal|Optional|datetime|"
               r"DataFrame|Series|ndarray|Tensor|Figure|Trial|FrozenTrial|BaseStorage|BaseSampler|"
               r"PreTrainedModel|PreTrainedTokenizerBase|TrainerCallback|Trainer|TrainingArguments|"
               r"ColumnTransformer|NoneType|function|callable|optional|array-like)"),
]

# autodoc: the public names, in source order, with signatures as written
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
python_use_unqualified_type_names = True
autodoc_default_options = {}

# myst / myst-nb
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"          # every build runs the tutorials (they are small)
nb_execution_timeout = 300
nb_execution_in_temp = True         # each tutorial runs in a scratch folder: nothing it writes stays in docs/
nb_execution_raise_on_error = True   # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "show"

html_theme = "pydata_sphinx_theme"
html_title = f"motune {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": []}
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
linkcheck_ignore = [r"https?://.*"]  # external links are never fetched
