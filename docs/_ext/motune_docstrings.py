"""Docstrings as the code writes them, rendered without warnings.

- ``Parameters`` sections write ``name: what it is`` under a numpydoc-style heading (not
  numpydoc's ``name : type``); such a section becomes a rubric and a definition list, so the
  docstrings render as written without a docstring-format extension reading the text after a
  colon as a type.
- A quoted annotation autodoc could not evaluate (``'dict[str, float]'``) is shown unquoted, and
  ``Callable[[...], X]`` as ``Callable[..., X]`` and a dataclass's ``= <factory>`` default as
  ``= ...``, so that the signature parser can read them (it shows what it cannot parse as raw text).
- A cross-reference to a public object by the module that defines it (``motune.run.TrialContext``,
  ``~motune.errors.MotuneError``, or a bare ``Choice`` inside ``motune.selection``) resolves to the
  entry under which the reference documents that same object (``motune.TrialContext``). A reference
  to an existing object the reference does not document (the machinery behind the public names)
  is shown as code without a link; one to a name that does not exist still warns (the build is
  nitpicky), so a docstring that names a removed or renamed object fails the build.
"""

from __future__ import annotations

import importlib
import re
import types

from sphinx.util.nodes import make_refnode

_SECTION = re.compile(r"^(\s*)(Parameters|Other Parameters|Attributes)\s*$")
_ITEM = re.compile(r"^(\s*)([A-Za-z_*][\w*]*(?:,\s*[A-Za-z_*][\w*]*)*):\s+(.*)$")


def _numpy_parameters(app, what, name, obj, options, lines):
    """``Parameters`` / ``----------`` / ``name: text`` becomes a rubric and a definition list."""
    out, base = [], None  # base: the indent of the section being read (None: outside one)
    skip_rule = False
    for i, line in enumerate(lines):
        if skip_rule:
            skip_rule = False
            continue
        section = _SECTION.match(line)
        if section and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            base = section.group(1)
            out += [f"{base}.. rubric:: {section.group(2)}", ""]
            skip_rule = True
            continue
        if base is not None and line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            item = _ITEM.match(line)
            if indent == base and item:
                if out and out[-1].strip():
                    out.append("")
                out += [base + "``" + item.group(2) + "``", base + "    " + item.group(3)]
                continue
            if len(indent) <= len(base):
                base = None  # a line at the section's indent that is no item: the section ended
                out.append("")
        out.append(line)
    lines[:] = out


def _resolve(path: str):
    """The object ``path`` names (a module, or an attribute of one), or None."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except Exception:
            continue
        try:
            for attr in parts[cut:]:
                value = getattr(value, attr)
        except AttributeError:
            return None
        return value
    return None


def _documented(env):
    cache = getattr(env, "_motune_documented", None)
    if cache is None:
        cache = {}
        for fullname, entry in env.get_domain("py").objects.items():
            if entry.aliased:
                continue
            value = _resolve(fullname)
            if value is not None and not isinstance(value, (int, float, bool)):
                cache.setdefault(id(value), (fullname, entry))
        env._motune_documented = cache
    return cache


def _missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    module, klass = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates += [f"{module}.{target}"] + ([f"{module}.{klass}.{target}"] if klass else [])
        # a member re-exported by a package (motune.viz.reference_point, from motune.viz.history) refers
        # to names of the submodule that defines it
        package = _resolve(module)
        for attr, sub in sorted(vars(package).items()) if isinstance(package, types.ModuleType) else ():
            if isinstance(sub, types.ModuleType) and sub.__name__.startswith(module + "."):
                candidates.append(f"{sub.__name__}.{target}")
    exists = False
    for candidate in candidates:
        if not candidate.startswith("motune"):
            continue
        value = _resolve(candidate)
        if value is None:
            continue
        exists = True
        found = _documented(env).get(id(value))
        if found:
            fullname, entry = found
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, fullname)
    # An existing object the reference does not document (machinery behind the public names) is named
    # as plain code; a name that exists nowhere (a stale docstring) still warns.
    return contnode if exists else None


def _unquote(app, what, name, obj, options, signature, return_annotation):
    """Annotations autodoc cannot evaluate (NamedTuple fields under ``from __future__ import
    annotations``) come out quoted, ``'dict[str, float]'``, which the signature parser cannot read;
    show them as the annotation they spell."""
    def clean(text):
        if text is None:
            return None
        text = text.replace("[[...], ", "[..., ")  # Callable[..., X] as autodoc spells it; the parser reads only this
        text = text.replace("= <factory>", "= ...")  # a dataclass field's default_factory: a fresh value per call
        return re.sub(r"ForwardRef\('([^']*)'\)|'(\w+\[[\w\[\], |]*\])'", lambda m: m.group(1) or m.group(2), text)
    return clean(signature), clean(return_annotation)


def _forget(app, env, docnames):
    env.__dict__.pop("_motune_documented", None)


def setup(app):
    app.connect("autodoc-process-docstring", _numpy_parameters)
    app.connect("autodoc-process-signature", _unquote)
    app.connect("missing-reference", _missing_reference)
    app.connect("env-before-read-docs", _forget)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
