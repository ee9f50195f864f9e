"""The HTML report in a real headless Chromium: no JavaScript errors, every figure drawn, a
non-blank screenshot; and PNG export of every figure through kaleido and that Chromium.

Skipped where no Chromium is installed, unless MOTUNE_REQUIRE_BROWSER=1 (CI), which fails instead.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import EVIL, make_study
from motune.cli import app

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
if CHROMIUM is None:
    if os.environ.get("MOTUNE_REQUIRE_BROWSER") == "1":
        raise RuntimeError("MOTUNE_REQUIRE_BROWSER=1 but no chromium / google-chrome on PATH")
    pytest.skip("no Chromium on this machine", allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars"]

PROBE = """<script>window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
const __log = console.error; console.error = (...a) => { window.__errors.push(a.map(String).join(' ')); __log(...a); };
</script>"""
CHECK = """<script>window.addEventListener('load', () => setTimeout(() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  const drawn = divs.filter(d => d._fullLayout && d.querySelector('.main-svg') &&
                                 d.getBoundingClientRect().height > 100).map(d => d.id);
  const rects = Object.fromEntries(divs.map(d => { const r = d.getBoundingClientRect();
    return [d.id, [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]]; }));
  const pre = document.createElement('pre'); pre.id = 'motune-check';
  pre.textContent = JSON.stringify({errors: window.__errors, figures: divs.map(d => d.id), drawn: drawn,
                                    rects: rects, height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
}, 1500));</script>"""


# Layout at a given window width: does the page scroll sideways, does any text run out of its box (table
# cells, headings, paragraphs), and does any figure text (titles, axis titles, ticks, annotations, legend)
# fall outside its figure or an annotation overlap tick labels. Tables may scroll inside their own box.
LAYOUT = """<script>window.addEventListener('load', () => setTimeout(() => {
  const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
  const name = e => (e.id ? '#' + e.id : e.tagName.toLowerCase()) + ': ' + (e.textContent || '').trim().slice(0, 60);
  const overflowing = [...document.querySelectorAll('h1, h2, p, th, td, li')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible').map(name);
  const outside = [], overlapping = [];
  for (const div of document.querySelectorAll('.plotly-graph-div')) {
    const d = box(div);
    const texts = [...div.querySelectorAll('.gtitle, .g-xtitle text, .g-ytitle text, .xtick text, .ytick text, ' +
                                           '.annotation-text, .legendtext, .y-title, .ytitle, .xtitle')];
    for (const t of texts) {
      const b = box(t);
      if (b.r - b.l === 0) continue;
      if (b.l < d.l - 2 || b.r > d.r + 2 || b.t < d.t - 2 || b.b > d.b + 2) outside.push(div.id + ' ' + name(t));
    }
    const ticks = [...div.querySelectorAll('.xtick text, .ytick text')].map(box);
    for (const a of div.querySelectorAll('.annotation-text')) {
      const b = box(a);
      if (ticks.some(k => k.l < b.r && b.l < k.r && k.t < b.b && b.t < k.b)) overlapping.push(div.id + ' ' + name(a));
    }
  }
  const found = JSON.stringify({page_width: document.documentElement.scrollWidth, window_width: innerWidth,
                                 overflowing, outside, overlapping,
                                 viewport: !!document.querySelector('meta[name=viewport]')});
  const pre = document.createElement('pre'); pre.id = 'motune-layout'; pre.textContent = found;
  document.body.appendChild(pre);
  if (window.parent !== window) window.parent.postMessage(found, '*');
}, 1500));</script>"""
# Headless Chromium's window is at least 500 px wide: a narrower screen is an iframe of that width (its own
# viewport, so the page's media queries apply), which posts what it measured to the page around it.
FRAME = """<!DOCTYPE html><html><body style='margin:0'>
<iframe src='{src}' style='width:{width}px;height:1000px;border:0'></iframe>
<script>addEventListener('message', e => {{ const pre = document.createElement('pre'); pre.id = 'motune-layout';
  pre.textContent = e.data; document.body.appendChild(pre); }});</script></body></html>"""


def layout_at(page, width, tmp_path):
    """The LAYOUT measures of ``page`` in a Chromium window ``width`` px wide."""
    probed = tmp_path / f"layout-{width}.html"
    probed.write_text(page.replace("</body>", LAYOUT + "</body>", 1))
    opened = probed
    if width < 500:
        opened = tmp_path / f"frame-{width}.html"
        opened.write_text(FRAME.format(src=probed.as_uri(), width=width))
    run = chromium("--virtual-time-budget=30000", f"--window-size={max(width, 500)},1000", "--dump-dom",
                   opened.as_uri())
    found = re.search(r'<pre id="motune-layout">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


def chromium(*args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(reported_result, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    mt.viz.write_report(reported_result, path)
    return path


def _probe(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1).replace("</body>", CHECK + "</body>", 1))
    run = chromium("--virtual-time-budget=30000", "--window-size=1200,900", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="motune-check">(.*?)</pre>', run.stdout, re.S)
    assert found, run.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


# An annotation-only figure (no data) measures about 0.0010 coloured and 120-130 colours in its plot
# area; the sparsest real figure here (8 overlapping Pareto points) about 0.0019 and 290.
def _inked(image, box=None):
    """Share of coloured pixels (data marks; grid lines, text and background are grey) and the
    number of distinct colours in ``box`` (the whole image by default)."""
    pixels = np.asarray(image.convert("RGB").crop(box) if box else image.convert("RGB")).reshape(-1, 3).astype(int)
    coloured = (pixels.max(axis=1) - pixels.min(axis=1)) > 40
    return float(coloured.mean()), len(np.unique(pixels, axis=0))


def test_report_loads_without_errors_and_draws_every_figure(report, reported_result, tmp_path):
    page = report.read_text()
    assert EVIL not in page and "\\u003cimg src=x" not in page  # user text escaped, in HTML and in figure JSON
    assert "<script src=" not in page and page.count("<script") >= 8  # plotly.js inlined, nothing fetched
    check = _probe(page, tmp_path)
    assert check["errors"] == []
    expected = [f"fig-{key}" for key, _, _ in mt.viz.report_figures(reported_result)]
    assert check["figures"] == expected and len(expected) == 7 and sorted(check["drawn"]) == sorted(expected)


def test_report_screenshot_shows_every_figure(report, tmp_path):
    """Each figure's plot area (its box minus title and margins) in a screenshot of the page is drawn on."""
    from PIL import Image

    check = _probe(report.read_text(), tmp_path)
    height = min(int(check["height"]) + 50, 16000)
    shot = tmp_path / "shot.png"
    run = chromium("--virtual-time-budget=30000", f"--window-size=1200,{height}", f"--screenshot={shot}",
                   report.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    image = Image.open(shot)
    for figure, (x, y, w, h) in check["rects"].items():
        box = (int(x + 0.1 * w), int(y + 0.25 * h), int(x + 0.8 * w), int(y + 0.9 * h))
        ink, colours = _inked(image, box)
        assert ink > 0.0012 and colours > 150, (figure, ink, colours)


def test_png_export_of_every_figure(reported_result, tmp_path):
    from PIL import Image

    figures = mt.viz.report_figures(reported_result)
    paths = mt.viz.export_pngs(figures, tmp_path / "figures")
    assert [p.name for p in paths] == [f"{key}.png" for key, _, _ in figures]
    for path in paths:
        image = Image.open(path)
        w, h = image.size
        ink, colours = _inked(image, (int(0.1 * w), int(0.25 * h), int(0.8 * w), int(0.9 * h)))  # the plot area
        assert w == 1100 and ink > 0.0012 and colours > 150, (path.name, ink, colours)


def test_cli_report_with_png(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_study(task, url, name="png-study").optimize(n_trials=3, show_progress=False)
    out = tmp_path / "r.html"
    ran = CliRunner().invoke(app, ["report", "png-study", "-o", str(out), "--storage", url, "--png"])
    assert ran.exit_code == 0, ran.output
    assert out.exists() and sorted(p.name for p in (tmp_path / "r_figures").iterdir())[0].endswith(".png")


def test_a_decided_study_opens_on_its_decision_with_every_figure_drawn(task, tmp_path):
    """Three objectives (the pairwise panels beside the 3-D scene), a confirmation and a decision."""
    from conftest import FAST_LATENCY

    url = f"sqlite:///{tmp_path / 'decided.db'}"
    study = make_study(task, url, name=f"decided {EVIL}", metric_options=FAST_LATENCY, metrics=["roc_auc"],
                       objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference"),
                                   mt.minimize("latency_p95_ms")])
    result = mt.confirm(study.optimize(n_trials=8, show_progress=False), n_boot=20, latency_min_count=30,
                        latency_min_time_s=0.05)
    decision = mt.decide(mt.select(result, mt.rules.knee()), rationale=f"why {EVIL}", decided_by="a test",
                         accept_noisy=True)  # a loaded host's latency may stay flagged: the report says so
    path = mt.viz.write_report(mt.load_study(study.name, storage=url), tmp_path / "decided.html")
    page = path.read_text()
    assert EVIL not in page
    assert page.index("id='decision'") < page.index("<h2>Study</h2>")  # the decision opens the page
    assert f"Decision 1 (current): trial {decision.trial}" in page and "Confirmation on the test split" in page
    assert "chosen (decision 1)" in page and "roc_<wbr>auc" in page  # a header that breaks after "_"
    check = _probe(page, tmp_path)
    assert check["errors"] == []
    assert "fig-pareto_pairs" in check["figures"] and sorted(check["drawn"]) == sorted(check["figures"])
    for width in (1400, 400):  # a desktop and a phone: nothing out of its box, the page never scrolls sideways
        seen = layout_at(page, width, tmp_path)
        assert seen["viewport"] and seen["window_width"] == width and seen["page_width"] <= width, (width, seen)
        assert seen["overflowing"] == [] and seen["outside"] == [] and seen["overlapping"] == [], (width, seen)
