"""A live view of a running sweep: ``motune serve NAME`` serves the study's report on 127.0.0.1.

The page is the HTML report (:mod:`motune.viz.report`: the decision, the
front, constraints, pruned and infeasible trials, every figure that applies),
rendered from the storage alone, so it shows the trials of every worker on
any machine that writes there. The server re-reads the storage at most every
``poll_s`` seconds and renders the report again only when the study changed
(a trial started or ended, a decision or check was recorded); the page asks
``/state`` every ``poll_s`` seconds and reloads itself, keeping its scroll
position, when the state it was rendered from is no longer the current one.

Routes: ``/`` the report, ``/state`` the study's state as JSON (trials by
state, decisions, checks, when rendered), ``/healthz`` ``ok``. It binds to
127.0.0.1 only (to share it, forward the port, e.g. ``ssh -L``); it writes
nothing to the storage.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from motune import _schema
from motune.run import load_study
from motune.viz.report import render_report

HOST = "127.0.0.1"

_RELOAD = """<script>(() => {{
  const key = 'motune-scroll:' + location.pathname;
  const kept = sessionStorage.getItem(key);
  if (kept !== null) {{ addEventListener('load', () => scrollTo(0, +kept)); sessionStorage.removeItem(key); }}
  const shown = {state};
  const note = document.createElement('div');
  note.id = 'motune-live';
  note.style.cssText = 'position:fixed;top:0;right:0;background:#fff8d6;border:1px solid #e0c96b;' +
                       'padding:0.2rem 0.5rem;font:12px system-ui,sans-serif;z-index:10';
  note.textContent = 'live: ' + shown.summary;
  addEventListener('DOMContentLoaded', () => document.body.appendChild(note));
  setInterval(async () => {{
    try {{
      const now = await (await fetch('state', {{cache: 'no-store'}})).json();
      if (now.key !== shown.key) {{ sessionStorage.setItem(key, String(scrollY)); location.reload(); }}
    }} catch (e) {{ note.textContent = 'live: the server does not answer (' + e + ')'; }}
  }}, {poll_ms});
}})();</script>"""


def study_state(result: Any) -> dict[str, Any]:
    """What the page was rendered from: trials by state (and the latest finished), decisions, checks. Its
    ``key`` changes whenever any of these does."""
    trials = result.study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    finished = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    attrs = result.study.user_attrs
    state = {"study": result.name, "trials": len(trials), "states": dict(sorted(states.items())),
             "last_finished": max(finished).isoformat() if finished else None,
             "decisions": len(_schema.read_decisions(attrs)), "checks": len(result.checks())}
    state["key"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    parts = [f"{state['trials']} trials"] + [f"{n} {s.lower()}" for s, n in state["states"].items()]
    state["summary"] = ", ".join(parts) + (f", {state['decisions']} decision(s)" if state["decisions"] else "")
    return state


@dataclass
class LiveReport:
    """The report of study ``name`` in ``storage``, rendered again when the study changed."""

    name: str
    storage: Any = None
    poll_s: float = 5.0
    say: Callable[[str], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _state: dict[str, Any] | None = field(default=None, repr=False)
    _page: bytes = field(default=b"", repr=False)
    _read_at: float = field(default=0.0, repr=False)
    _rendered_key: str = field(default="", repr=False)
    _result: Any = field(default=None, repr=False)

    def _read(self) -> Any:
        """The study, opened once (one storage engine for the server's life) and re-read from storage."""
        if self._result is None:
            self._result = load_study(self.name, storage=self.storage)
            return self._result
        return self._result.refresh()

    def state(self) -> dict[str, Any]:
        """The study's current state (the storage read at most every ``poll_s`` seconds)."""
        with self._lock:
            if self._state is None or time.monotonic() - self._read_at >= self.poll_s:
                self._state = study_state(self._read())
                self._read_at = time.monotonic()
            return self._state

    def page(self) -> bytes:
        """The report for the current state (rendered only when the state changed)."""
        self.state()  # the storage read (at most every poll_s); the study and its state are set together
        with self._lock:
            state = self._state
            if not self._page or self._rendered_key != state["key"]:
                began = time.monotonic()
                html = render_report(self._result)
                script = _RELOAD.format(state=json.dumps({"key": state["key"], "summary": state["summary"]}),
                                        poll_ms=int(1000 * self.poll_s))
                self._page = html.replace("</head>", script + "</head>", 1).encode("utf-8")
                self._rendered_key = state["key"]
                if self.say:
                    self.say(f"rendered {self.name}: {state['summary']} ({time.monotonic() - began:.1f} s)")
            return self._page


def serve(live: LiveReport, port: int = 8765) -> ThreadingHTTPServer:
    """A server for ``live`` on 127.0.0.1:``port`` (0: any free port; ``server.server_port`` says which),
    not yet started: call ``serve_forever()``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            try:
                if path == "/":
                    body, kind = live.page(), "text/html; charset=utf-8"
                elif path == "/state":
                    body, kind = json.dumps(live.state()).encode(), "application/json"
                elif path == "/healthz":
                    body, kind = b"ok", "text/plain"
                else:
                    self.send_error(404, "motune serve has /, /state and /healthz")
                    return
            except Exception as e:  # the storage is away or the study broke: say so on the page
                self.send_error(503, f"{type(e).__name__}: {e}"[:500])
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass  # one line per request would bury the render lines

    return ThreadingHTTPServer((HOST, port), Handler)


__all__ = ["HOST", "LiveReport", "serve", "study_state"]
