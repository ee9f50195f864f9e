"""Study files imported as modules: a model class defined in the file pickles, so its models are kept,
confirmed, decided on and exported, and load again in another process."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import motune as mt
from motune.studyfile import load, studies_in_file

HERE = Path(__file__).parent

OWN_CLASS = '''
import sys
sys.path.insert(0, {here!r})
from conftest import make_frame
from sklearn.linear_model import LogisticRegression
import motune as mt


class Thresholded:
    """A model class of this file's own."""

    def __init__(self, model, threshold):
        self.model, self.threshold = model, threshold

    def predict(self, X):
        return (self.model.predict_proba(X)[:, 1] > self.threshold).astype(int)


def space(trial):
    trial.suggest_float("threshold", 0.3, 0.7)


def train(params, task, ctx):
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(task.preprocessor(), LogisticRegression()).fit(task.X_train, task.y_train)
    return Thresholded(model, params["threshold"])


study = mt.Study(name="own-class", task=mt.Task.from_frame(make_frame(), label="y", sensitive="group", seed=0,
                                                           name="s"),
                 space=space, train=train, objectives=[mt.maximize("accuracy"),
                                                      mt.minimize("demographic_parity_difference")],
                 storage={url!r}, keep_models="all")

if __name__ == "__main__":
    raise SystemExit("the main block does not run when motune loads the file")
'''


def _motune(*args, cwd):
    return subprocess.run([sys.executable, "-m", "motune.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_a_study_file_with_its_own_model_class_keeps_confirms_and_exports_its_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'own.db'}"
    path = tmp_path / "own_class_study.py"
    path.write_text(OWN_CLASS.format(here=str(HERE), url=url))
    for args in (["run", str(path), "--trials", "3", "-q"], ["confirm", "own-class", "--storage", url,
                                                             "--n-boot", "10", "--quiet-wait", "0"],
                 ["decide", "own-class", "--storage", url, "--rule", "knee", "--why", "w", "--by", "b"],
                 ["export", "own-class", "--storage", url, "-o", str(tmp_path / "out")]):
        done = _motune(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr[-2000:])
    result = mt.load_study("own-class", storage=url)
    assert all(r.model is not None and not r.attrs.get("model_not_kept") for r in result.records())
    assert all(r.confirmation for r in result.records() if r.on_front)
    # a fresh process loads the exported model once the file's folder is importable
    check = textwrap.dedent(f"""
        import sys, motune as mt
        sys.path.insert(0, {str(tmp_path)!r})
        model = mt.load_exported({str(tmp_path / 'out')!r})
        print(type(model).__module__, type(model).__name__)
    """)
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == ["own_class_study", "Thresholded"]


def test_loading_a_file_names_its_module_imports_it_once_and_reports_its_errors(tmp_path):
    path = tmp_path / "twice.py"
    path.write_text("import motune\nRUNS = []\nRUNS.append(1)\n")
    first = load(path)
    assert first.__name__ == "twice" and sys.modules["twice"] is first and load(path) is first
    clash = tmp_path / "json.py"  # a name another module has: a name of its own
    clash.write_text("X = 1\n")
    assert load(clash).__name__.startswith("motune_study_json_") and sys.modules["json"].__name__ == "json"
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\nraise RuntimeError('no data here')\n")
    with pytest.raises(mt.StudyFileError, match="broken.py \\(line 2 of broken.py\\) raised RuntimeError: no data"):
        studies_in_file(broken)
    with pytest.raises(mt.StudyFileError, match="not found"):
        load(tmp_path / "missing.py")
    bad = tmp_path / "syntax.py"
    bad.write_text("def (:\n")
    with pytest.raises(mt.StudyFileError, match="line 1: SyntaxError"):
        load(bad)
    assert "broken" not in sys.modules and "syntax" not in sys.modules


def test_a_script_that_runs_and_confirms_its_study_without_a_main_guard_runs_it_once(tmp_path):
    """``python FILE`` whose module level runs a study and confirms it (no ``__main__`` guard): loading the
    models imports the study's recorded file, which is the running script; it is not imported (and its study
    run) again."""
    url = f"sqlite:///{tmp_path / 'script.db'}"
    body = OWN_CLASS.format(here=str(HERE), url=url).split('if __name__ == "__main__":')[0]
    body += textwrap.dedent("""
        result = study.optimize(n_trials=2, show_progress=False)
        mt.confirm(mt.load_study("own-class", storage=study.storage), n_boot=10, quiet_wait_s=0)
        print("trials", len(mt.load_study("own-class", storage=study.storage).records()))
    """)
    path = tmp_path / "script_study.py"
    path.write_text(body)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["trials", "2"]
    assert all(r.confirmation for r in mt.load_study("own-class", storage=url).records() if r.on_front)
