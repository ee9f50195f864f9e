"""notebooks/quickstart.ipynb runs top to bottom (in a scratch folder) and shows its figures."""

import base64
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"
pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit it without outputs"
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
               or "text/html" in o.get("data", {}) and "plotly" in o["data"]["text/html"]]
    assert len(figures) >= 7
    # each figure carries a static image beside the interactive one: GitHub and nbconvert show it
    assert all(len(base64.b64decode(f["data"].get("image/png", ""))) > 20_000 for f in figures), \
        [sorted(f["data"]) for f in figures]
    exported, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert exported.count("data:image/png;base64,") >= len(figures)
    assert (tmp_path / "quickstart.html").stat().st_size > 1_000_000 and (tmp_path / "quickstart.db").exists()
