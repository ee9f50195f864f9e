"""Fails the build when a public name of ``motune`` (its ``__all__``) has no entry in the API reference.

Checked once every page is read: each name in ``motune.__all__`` (modules and ``__version__`` aside,
which the reference describes in words) must be an object in the Python domain (``motune.<name>``).
"""

from __future__ import annotations

import types

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _check(app, env):
    import motune

    documented = set(env.get_domain("py").objects)
    for name in motune.__all__:
        value = getattr(motune, name)
        if name.startswith("__") or isinstance(value, types.ModuleType):
            target = f"motune.{name}"
            if isinstance(value, types.ModuleType) and target not in documented:
                logger.warning("motune.%s (a module) has no entry in the API reference", name, type="motune")
            continue
        if f"motune.{name}" not in documented:
            logger.warning("motune.%s is public (motune.__all__) but has no entry in the API reference", name,
                           type="motune")


def setup(app):
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
