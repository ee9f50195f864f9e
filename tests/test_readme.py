"""The README is the truth about how to install, run and test: its code and commands must work.

- its Python blocks compile, and every ``mt.<name>(...)`` call in them binds to that function's
  real signature (the names of its keywords and how many positional arguments it takes);
- the study block runs as it is written, with its trial count cut to 1 (about 40 s on the 2-core
  machine at a load average of 7; its own timing-lock folder, so a benchmark timing latency on
  the same host does not hold it up);
- every ``motune ...`` command line in its shell blocks names a real command and real options of
  the typer app, and every ``bash scripts/...`` script exists;
- every local link (``[text](path)``) names a file in the repository.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import motune as mt
from motune.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def test_the_readme_is_short_and_has_its_blocks():
    assert len(README.splitlines()) <= 250
    assert blocks("python") and blocks("bash")


def _calls(tree: ast.AST):
    """(dotted name, call node) for each call of an ``mt.`` attribute."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name) and func.id == "mt" and parts:
                yield ".".join(reversed(parts)), node


def test_every_mt_call_fits_its_signature():
    checked = []
    for code in blocks("python"):
        tree = ast.parse(code)
        for name, node in _calls(tree):
            target = mt
            for part in name.split("."):
                target = getattr(target, part)  # AttributeError: the README names what does not exist
            signature = inspect.signature(target)
            args = [object()] * len(node.args)
            kwargs = {k.arg: object() for k in node.keywords if k.arg is not None}
            signature.bind(*args, **kwargs)  # TypeError: a keyword or an argument count that does not fit
            checked.append(name)
    assert {"Study", "maximize", "at_most", "confirm", "select", "decide", "load_study"} <= set(checked)


def test_the_readme_study_runs(tmp_path):
    """The first Python block, as written, with 1 trial instead of 30 in a scratch folder."""
    study_block = blocks("python")[0]
    assert "study.optimize(n_trials=30)" in study_block
    code = study_block.replace("study.optimize(n_trials=30)", "study.optimize(n_trials=1)")
    code += ("\nassert len(result.trials()) == 1, result.trials()\n"
             "assert mt.load_study('adult-fairness-hgb').summary()['trials'] == 1\n")
    (tmp_path / "readme_study.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("MOTUNE_STORAGE", "MOTUNE_ARTIFACTS")}
    env |= {"HF_HUB_OFFLINE": "1", "MOTUNE_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run([sys.executable, "readme_study.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "motune.db").exists()  # the default storage, as the comment says


def _command_lines():
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part.strip())
                if words and Path(words[0]).name == "motune":
                    yield words


def test_every_command_line_names_real_commands_and_options():
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="motune")
    lines = list(_command_lines())
    assert len(lines) >= 7
    for words in lines:
        command = group.get_command(root, words[1])
        assert command is not None, f"motune {words[1]}: no such command"
        options = {o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")}
        used = {w.split("=", 1)[0] for w in words[2:] if w.startswith("-")}
        assert used <= options, f"{' '.join(words)}: {sorted(used - options)} not options of motune {words[1]}"


def test_scripts_and_local_links_exist():
    for script in re.findall(r"bash (scripts/[\w.-]+)", README):
        assert (ROOT / script).is_file(), script
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.parametrize("path", ["scripts/docs", "scripts/test", ".ci/run"])
def test_ci_builds_the_docs_after_the_tests(path):
    text = (ROOT / path).read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    if path == ".ci/run":
        assert text.index("bash scripts/test") < text.index("bash scripts/docs")
