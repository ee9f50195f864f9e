"""``.. motune-cli::``: the command-line reference, generated from the typer app itself.

The directive walks the click command tree that typer builds (``typer.main.get_command``) and
writes, for each command, its usage line, its help text and every argument and option with its
help, default and whether it is required, as ``.. program::`` / ``.. option::`` entries (so
``:option:`motune decide --rule``` links to it). The generated text is reStructuredText: in a
MyST page, put the directive inside an ``{eval-rst}`` block. The page therefore cannot drift from the code:
a new command or option appears at the next build, a removed one disappears.
"""

from __future__ import annotations

import re

import typer
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _escape(text: str) -> str:
    """Plain text as reST: every punctuation character backslash-escaped (so nothing is markup)."""
    return re.sub(r"([^\w\s])", r"\\\1", text)


def _paragraphs(text: str) -> list[str]:
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", (text or "").strip()):
        block = " ".join(line.strip() for line in block.splitlines() if line.strip())
        if block:
            lines += [_escape(block), ""]
    return lines


def _param_rows(param, ctx) -> tuple[str, list[str]]:
    if param.param_type_name == "argument":
        signature = param.name.upper()
        help_text = getattr(param, "help", None) or ""
        notes = ["required" if param.required else "optional"]
    else:
        names = ", ".join(param.opts)
        if param.secondary_opts:
            names += ", " + ", ".join(param.secondary_opts)
        record = param.get_help_record(ctx)
        metavar = record[0].split(" ", 1)[1] if record and not param.is_flag and " " in record[0] else ""
        signature = names + (" " + metavar if metavar else "")
        help_text = param.help or ""
        notes = []
        if param.required:
            notes.append("required")
        if getattr(param, "multiple", False):
            notes.append("repeatable")
        default = param.default
        if not param.required and default not in (None, False, (), []) and not callable(default):
            if param.is_flag and param.secondary_opts:
                default = param.opts[0] if default else param.secondary_opts[0]
            notes.append(f"default: {default}")
    return signature, _paragraphs(help_text) + ([_escape("(" + "; ".join(notes) + ")"), ""] if notes else [])


def command_lines(app: typer.Typer, prog: str = "motune") -> list[str]:
    """reST for every command of ``app``, in the order ``motune --help`` lists them."""
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name=prog)
    lines = [".. program:: " + prog, ""] + _paragraphs(group.help or "")
    names = [n for n in group.list_commands(root) if not getattr(group.get_command(root, n), "hidden", False)]
    lines += [".. list-table::", "   :header-rows: 1", "   :widths: 1 4", "", "   * - command", "     - what it does"]
    for name in names:
        first = re.split(r"(?<=\.)\s", " ".join((group.get_command(root, name).help or "").split()), maxsplit=1)[0]
        lines += [f"   * - :ref:`{prog} {name} <cli-{name}>`", f"     - {_escape(first)}"]
    lines.append("")
    for name in names:
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        ctx = command.context_class(command, info_name=name, parent=root)
        title = f"{prog} {name}"
        usage = command.get_usage(ctx).removeprefix("Usage: ").replace("{", "").replace("}", "")
        lines += [f".. _cli-{name}:", "", title, "-" * len(title), "", ".. code-block:: text", "",
                  "   " + usage, ""]
        lines += _paragraphs(command.help or "")
        lines += [f".. program:: {title}", ""]
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            signature, body = _param_rows(param, ctx)
            directive = "describe" if param.param_type_name == "argument" else "option"
            lines += [f".. {directive}:: {signature}", ""] + ["   " + line if line else "" for line in body]
    return lines


class MotuneCli(SphinxDirective):
    has_content = False
    required_arguments = 0

    def run(self):
        from motune.cli import app

        self.env.note_dependency(__import__("motune.cli").cli.__file__)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(command_lines(app), source="motune.cli"), container)
        return container.children


def _register_labels(app, doctree):
    """The labels ``cli-<command>`` name each command's section. In a MyST page the eval-rst block does
    not hand nested targets to the standard domain, so those it missed are added once the page is read."""
    std = app.env.get_domain("std")
    for element in doctree.findall(nodes.Element):
        for label in element.get("ids", ()):
            if label.startswith("cli-") and label not in std.labels:
                std.note_hyperlink_target(label, app.env.docname, label, "motune " + label.removeprefix("cli-"))


def setup(app):
    app.add_directive("motune-cli", MotuneCli)
    app.connect("doctree-read", _register_labels)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
