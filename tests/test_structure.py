"""The rooms and floors: a module imports only from rooms on lower floors (and from its own room);
the one exception is the documented lazy import of motune.run behind Study.optimize / Study.result.
Read from the source with ast, as ../shared/tools/import-cycles does."""

import ast
from pathlib import Path

import motune

ROOT = Path(motune.__file__).parent
FLOORS = {  # room -> floor (see the closing note of issue 9 for how this differs from DESIGN.md)
    "errors": 0, "_schema": 0, "_pareto": 0, "devices": 0.5, "locks": 1,
    "task": 1, "provenance": 1, "pruning": 1, "training": 3, "dashboard": 1,
    "models": 2, "data": 2,
    "metrics": 3,
    "spec": 4, "studyfile": 4.5,
    "results": 5,
    "selection": 6,
    "run": 7,
    "confirm": 8, "export": 8, "monitoring": 8,
    "integrations": 9, "viz": 9, "terminal": 9, "live": 9.5,
    "cli": 10, "__init__": 10, "__main__": 11,
}
LAZY = {("spec", "run")}  # Study.optimize / Study.result import motune.run inside the method


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "motune":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path):
    """(imported module, at module level?) for every motune import in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "motune"]
        for name in names:
            if name.startswith("motune"):
                yield name, id(node) in top


def test_every_import_goes_down_a_floor():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(relative.parts)
        room = room_of(module.removesuffix(".__init__")) if module != "motune.__init__" else "__init__"
        assert room in FLOORS, f"{module} is in no room of the map"
        for name, module_level in imports(path):
            target = room_of(name)
            if target is None or target == room or target == "__init__" and name == "motune":
                continue
            if FLOORS[target] < FLOORS[room]:
                continue
            if (room, target) in LAZY and not module_level:
                continue
            wrong.append(f"{module} (floor {FLOORS[room]}) imports {name} (floor {FLOORS[target]})")
    assert not wrong, "\n".join(wrong)


def test_models_do_not_import_metrics_and_viz_does_not_import_run():
    for room, forbidden in (("models", "metrics"), ("viz", "run")):
        for path in (ROOT / room).rglob("*.py"):
            assert not [n for n, _ in imports(path) if room_of(n) == forbidden], path


def test_outside_the_run_room_only_its_public_names_are_imported():
    """``motune.run``'s modules are its own business: every other room imports from ``motune.run`` itself (its
    ``__all__``), and only names it exports."""
    import motune.run

    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if (ROOT / "run") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("motune.run."):
                wrong.append(f"{path.relative_to(ROOT)} imports {node.module}")
            elif isinstance(node, ast.ImportFrom) and node.module == "motune.run":
                wrong += [f"{path.relative_to(ROOT)} imports motune.run.{a.name}, which it does not export"
                          for a in node.names if a.name not in motune.run.__all__]
            elif isinstance(node, ast.Import):
                wrong += [f"{path.relative_to(ROOT)} imports {a.name}" for a in node.names
                          if a.name.startswith("motune.run.")]
    assert not wrong, "\n".join(wrong)


def test_one_supervisor_runs_every_pool_of_workers():
    """The process pool and the Ray cluster are launchers behind one supervisor: neither has its own loop of
    tickets, signals, deaths and retries."""
    for name in ("pool", "cluster"):
        source = (ROOT / "run" / f"{name}.py").read_text()
        assert "Supervisor(" in source and "signal.signal(" not in source and "RetryStaleTrial" not in source, name


def test_feasibility_the_front_and_directions_are_decided_in_one_room():
    """No module but the verdict room (``_schema.kept``, ``Constraint``'s methods, ``_pareto``) compares a
    violation with 0, computes a front or flips a sign by direction."""
    import re

    patterns = {
        "a violation compared with 0": re.compile(r"violation\([^)]*\)\s*(<=|<|>=|>)\s*0\b"),
        "a front of its own": re.compile(r"nondominated_mask\("),
        "a sign flipped by direction": re.compile(r"-1(\.0)? if [\w.]*direction == .maximize."),
    }
    home = {"_pareto.py", "_schema.py", "spec.py"}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name in home and path.parent == ROOT:
            continue
        text = path.read_text()
        for what, pattern in patterns.items():
            if pattern.search(text):
                found.append(f"{path.relative_to(ROOT)}: {what}")
    assert not found, found


CROSS_CUTTING = {"browser", "faults", "faults_postgres", "notebook", "structure", "studies",  # several rooms at once
                 "readme"}  # the README's code, command lines and links (the whole package, as a user meets it)


def test_the_tests_mirror_the_rooms():
    """Every test module is named after the room it tests (``test_<room>[_<module>...].py``, a private room
    without its underscore) or is one of the cross-cutting ones."""
    rooms = {room.lstrip("_") for room in FLOORS if room != "__init__"}
    stray = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        name = path.stem.removeprefix("test_")
        if name in CROSS_CUTTING:
            continue
        if not any(name == room or name.startswith(f"{room}_") for room in rooms):
            stray.append(path.name)
    assert not stray, f"test modules named after no room: {stray}"
