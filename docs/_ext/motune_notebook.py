"""Shows a notebook's cells on a page without executing it.

A page holds a MyST comment line ``% notebook-cells: <path>`` (the path relative to the page's
folder). When the page is read, that line is replaced by the notebook's cells: markdown cells as
they are, with every heading one level lower (the page keeps its own title), and code cells as
``python`` code blocks (not ``code-cell``: myst-nb does not run them). Outputs are not shown (the
notebooks are committed without them). A missing or unreadable notebook fails the build (-W).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

MARKER = re.compile(r"^% notebook-cells: (?P<path>\S+)[ \t]*$", re.MULTILINE)


def cells_markdown(notebook: Path) -> str:
    """The notebook's cells as MyST Markdown."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    parts = []
    for cell in cells:
        source = "".join(cell.get("source", "")).strip("\n")
        if not source:
            continue
        if cell["cell_type"] == "markdown":
            parts.append(re.sub(r"^(#{1,5}) ", r"#\1 ", source, flags=re.MULTILINE))
        elif cell["cell_type"] == "code":
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", source)), default=0))
            parts.append(f"{fence}python\n{source}\n{fence}")
    return "\n\n".join(parts) + "\n"


def _source_read(app, docname, source):
    text = source[0]
    page_dir = Path(app.env.doc2path(docname)).parent

    def replace(match):
        notebook = (page_dir / match["path"]).resolve()
        try:
            shown = cells_markdown(notebook)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("notebook-cells: cannot read %s: %s", notebook, error, location=docname, type="motune")
            return match[0]
        app.env.note_dependency(str(notebook))
        return shown

    source[0] = MARKER.sub(replace, text)


def setup(app):
    app.connect("source-read", _source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
