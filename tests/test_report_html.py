"""The HTML report: self-contained, every markdown cell findable, and explorable in a browser.

Browser checks drive headless Chromium over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no websocket, no extra package): real mouse clicks and typing,
and every console message, log entry and uncaught exception is recorded, so "no console
errors" is a real check. Screenshots are kept in the pytest tmp dir. Two stores: the 22
legacy methods (skipped without the fixtures) and a small synthetic store built here, with a
missing metric, two models and a model id full of HTML metacharacters.
"""

from __future__ import annotations

import base64
import contextlib
import html.parser
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest
from _references import parse_markdown_tables
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.report import metrics as M
from bdgen.report.html import BAR_METRICS, PARETO_X, PARETO_Y, pareto_front

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOREMASK = "llada_topp0.9_no_remask"
HOSTILE = 'z<b>&"x\'</script>'  # a model id: labels become "<model>/<method>"


# --- stores and reports -------------------------------------------------------------------
def _report(db: str, out, *args: str):
    res = CliRunner().invoke(cli, ["report", "--db", db, "--out", str(out), *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def _results(db: str):
    from bdgen.pipeline.views import load_results
    from bdgen.report.document import ordered

    return ordered(load_results(db))


@pytest.fixture(scope="module")
def legacy_db(tmp_path_factory, legacy_dir) -> str:
    from bdgen.store.api import Store

    path = str(tmp_path_factory.mktemp("html") / "s.db")
    store = Store.open(path)
    try:
        store.import_result_files([legacy_dir])
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, legacy_db):
    """`bdgen report` (default mode, with expectations) on a store holding the legacy files."""
    return _report(legacy_db, tmp_path_factory.mktemp("html") / "report",
                   "--expect", "v2_remasking")


# Synthetic store: model "mA" with four methods (two seeds each), model HOSTILE with one.
SYNTH = {
    ("mA", "llada_topp0.9_no_remask"): [0.90, 0.92],
    ("mA", "llada_topp0.9_remdm_cap_eta0.2"): [0.95, 0.95],
    ("mA", "random_topp0.9_no_remask"): [0.80, 0.70],
    ("mA", "random_argmax_no_remask"): [0.99, 0.97],
    (HOSTILE, "llada_argmax_no_remask"): [0.60, 0.64],
}
# This method never measured node_tv; it comes first in the page's order (model, method).
NO_NODE_TV = ("mA", "llada_topp0.9_no_remask")


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory) -> str:
    from bdgen.store.api import Store

    path = str(tmp_path_factory.mktemp("synth") / "synth.db")
    store = Store.open(path)
    try:
        for model in {m for m, _ in SYNTH}:
            store.get_or_create_model(model, "v1", "loglinear")
        for (model, method), vals in SYNTH.items():
            for seed, v in zip((1, 2), vals):
                gid = store.start_generation_run(model, method, seed, 100, 10)
                store.finish_generation_run(gid, "0" * 64, f"/s/{method}{seed}.pt")
                metrics = {"inside_validity": v, "novelty": 1.0 - v / 2,
                           "mode_coverage_weighted": v * v, "transitivity_score": 1.0,
                           "validity_rate": v, "diversity": 0.5 + v / 3,
                           "validity_by_num_rooms": {"5": {"overall": v},
                                                     "6": {"overall": v - 0.1}}}
                if (model, method) != NO_NODE_TV:
                    metrics["node_tv"] = 1.0 - v
                store.record_evaluation(gid, metrics)
    finally:
        store.close()
    return path


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, synth_db):
    return _report(synth_db, tmp_path_factory.mktemp("synth") / "report")


# --- the page as a parsed document (no browser) -------------------------------------------
class _Page(html.parser.HTMLParser):
    """Tables of the page by section: title, attributes of the wrapper, rows of cell text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.text: list[str] = []
        self._summary = self._cell = None
        self._title = ""
        self._wrap: dict = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "summary":
            self._summary = []
        elif tag == "div" and "data-layout" in a:
            self._wrap = a
        elif tag == "table":
            self.tables.append({"title": self._title, "wrap": self._wrap, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "summary":
            self._title = "".join(self._summary).strip()
            self._summary = None
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        for buf in (self._summary, self._cell):
            if buf is not None:
                buf.append(data)


def _plain(cell: str) -> str:
    """A markdown cell as the page shows its text (emphasis and code marks rendered)."""
    cell = re.sub(r"\*\*(.+?)\*\*", r"\1", cell)
    cell = re.sub(r"`(.+?)`", r"\1", cell)
    return re.sub(r"^\*(.+)\*$", r"\1", cell)


def _check_same_cells(out_dir) -> _Page:
    """Every markdown section is a table of the page with the same cells (transposed where
    the page shows methods as rows), plus the same header lines, notes and footer."""
    md = (out_dir / "comparison.md").read_text()
    page = _Page()
    page.feed((out_dir / "comparison.html").read_text())
    md_tables = parse_markdown_tables(md)
    assert [t["title"] for t in page.tables] == list(md_tables)
    for t in page.tables:
        want = [[_plain(c) for c in row] for row in md_tables[t["title"]]]
        got = t["rows"]
        if t["wrap"].get("data-transposed"):
            assert got[0][0] == "Method"
            cols = list(zip(*want))  # columns of the markdown table
            assert got[0][1:] == list(cols[0][1:]), t["title"]
            assert [list(r) for r in got[1:]] == [list(c) for c in cols[1:]], t["title"]
        else:
            assert got == want, t["title"]
    text = re.sub(r"\s+", " ", "".join(page.text))
    for line in md.splitlines():
        if line and not line.startswith(("|", "#", "---")):
            assert _plain(line.replace("**", "")) in text, line
    return page


def test_pareto_front():
    pts = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.9, 0.05)]
    assert pareto_front(pts) == [0, 1, 3]
    # maximise x, minimise y: (0.9, 0.05) beats every other point
    assert pareto_front(pts, (True, False)) == [4]
    # minimise both: (0.4, 0.4) beats (0.5, 0.5), (0.9, 0.05) beats (0.9, 0.1)
    assert pareto_front(pts, (False, False)) == [2, 3, 4]


def test_inlined_script_cannot_end_its_element():
    from importlib import resources

    js = resources.files("bdgen.report").joinpath("templates").joinpath("report.js")
    assert "</" not in js.read_text("utf-8")


def test_html_is_self_contained(report_dir):
    page = (report_dir / "comparison.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    # no external resources: only in-page fragment links, no src at all
    assert not re.search(r"""src=["']""", page)
    assert not re.search(r"""href=["'](?!#)""", page)
    assert set(re.findall(r"https?://[^\s\"'<>]*", page)) == {"http://www.w3.org/2000/svg"}
    assert "<img" not in page and "base64" not in page  # no raster plots any more
    assert len(page) < 600_000
    md_tables = parse_markdown_tables((report_dir / "comparison.md").read_text())
    assert page.count("<table>") == len(md_tables)


def test_every_markdown_cell_is_in_the_page(report_dir):
    page = _check_same_cells(report_dir)
    transposed = {t["title"] for t in page.tables if t["wrap"].get("data-transposed")}
    # 22 methods: every section with one column per method shows methods as rows
    assert len(transposed) == 8 and not any(t.startswith("Leaderboard") for t in transposed)


def test_synthetic_cells_and_escaping(synth_dir):
    page = _check_same_cells(synth_dir)
    raw = (synth_dir / "comparison.html").read_text()
    assert HOSTILE not in raw and "<b>&" not in raw  # escaped everywhere, JSON included
    assert "z&lt;b&gt;&amp;&#34;x&#39;&lt;/script&gt;" in raw
    labels = [r[0] for r in page.tables[1]["rows"][1:]]  # Validity, methods as rows
    assert f"{HOSTILE}/llada_argmax_no_remask" in labels


# --- a small DevTools-protocol client -----------------------------------------------------
class Browser:
    """One headless Chromium page, driven over ``--remote-debugging-pipe``."""

    def __init__(self, profile_dir, width: int = 1400, height: int = 1000):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        # The protocol uses file descriptors 3 (commands in) and 4 (replies out); bash, as
        # dash cannot redirect from descriptors above 9.
        script = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w}'
        # Chromium's own messages, kept for debugging a failed run (closed in close()).
        self._log = open(os.path.join(profile_dir, "chromium.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["bash", "-c", script, CHROMIUM, *FLAGS, "--remote-debugging-pipe",
             f"--user-data-dir={profile_dir}", "about:blank"],
            pass_fds=(to_child_r, from_child_w), stdout=subprocess.DEVNULL,
            stderr=self._log)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, timeout: float = 60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise AssertionError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def _mouse(self, kind: str, x: float, y: float, clicks: int = 1) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                  clickCount=clicks, buttons=0 if kind == "mouseReleased" else 1)

    def point_of(self, selector: str) -> tuple[float, float]:
        """Scroll ``selector`` into view; the centre of it, checked to be on top there."""
        x, y, hit = self.js(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            e.scrollIntoView({{block: "center", inline: "center"}});
            const r = e.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;
            const top = document.elementFromPoint(x, y);
            return [x, y, top === e || e.contains(top)];
        }})()""")
        assert hit, f"{selector} is covered by another element"
        return x, y

    def click(self, selector: str, clicks: int = 1) -> None:
        x, y = self.point_of(selector)
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for n in range(1, clicks + 1):
            self._mouse("mousePressed", x, y, n)
            self._mouse("mouseReleased", x, y, n)

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        self._mouse("mousePressed", x0, y0)
        for k in range(1, 6):
            self.call("Input.dispatchMouseEvent", type="mouseMoved", button="left", buttons=1,
                      x=x0 + (x1 - x0) * k / 5, y=y0 + (y1 - y0) * k / 5)
        self._mouse("mouseReleased", x1, y1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        if text:
            self.call("Input.insertText", text=text)
        else:  # replace the selection by nothing: a real Backspace
            for kind in ("keyDown", "keyUp"):
                self.call("Input.dispatchKeyEvent", type=kind, key="Backspace",
                          code="Backspace", windowsVirtualKeyCode=8)
        assert self.js(f"document.querySelector({json.dumps(selector)}).value") == text

    def screenshot(self, path, full: bool = False) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                          captureBeyondViewport=full)["data"])
        path.write_bytes(data)
        return data

    def errors(self) -> list[str]:
        """Console errors/warnings, log errors and uncaught exceptions seen so far."""
        self.js("0")  # flush pending events
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:500])
            elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning",
                                                                   "assert"):
                out.append(json.dumps(p["args"])[:500])
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(p["entry"].get("text", "")[:500])
        return out

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self._log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it with apt-get as root)")
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


# --- in-browser checks --------------------------------------------------------------------
def _rows(b: Browser, section: str) -> list[str]:
    """Method labels of the visible rows of a section's table, top to bottom."""
    return b.js(f"""[...document.querySelectorAll("#{section} tbody tr")]
        .filter(tr => tr.checkVisibility()).map(tr => tr.cells[0].textContent)""")


def _col(b: Browser, section: str, title: str) -> str:
    """Selector of the sortable header whose text is ``title``."""
    idx = b.js(f"""[...document.querySelectorAll("#{section} thead th")]
        .findIndex(th => th.textContent.trim() === {json.dumps(title)})""")
    assert idx >= 0, title
    return f"#{section} thead th:nth-child({idx + 1})"


def _order(results, labels, name, best_first: bool, start=None) -> list[str]:
    """The row order the page must show after sorting by ``name`` (missing last, stable)."""
    start = list(range(len(results))) if start is None else start
    d = M.metric_def(name).direction
    desc = (d == "higher") == best_first
    have = [i for i in start if M.value(results[i], name) is not None]
    have.sort(key=lambda i: M.value(results[i], name).mean, reverse=desc)
    return [labels[i] for i in have + [i for i in start if M.value(results[i], name) is None]]


def test_legacy_report_in_chromium(browser, report_dir, legacy_db, tmp_path):
    from bdgen.report.comparison_md import column_labels

    b = browser
    b.open((report_dir / "comparison.html").as_uri())
    results = _results(legacy_db)
    labels = column_labels(results)
    assert len(labels) == 22
    shot = b.screenshot(tmp_path / "legacy_top.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    assert b.js("document.querySelectorAll('table').length") == 9
    assert _rows(b, "sec-validity") == labels

    # sorting: best first on the first click, reversed on the second; exact orders
    b.click(_col(b, "sec-validity", "Inside validity"))
    first = _order(results, labels, "inside_validity", True)
    assert _rows(b, "sec-validity") == first
    b.click(_col(b, "sec-validity", "Inside validity"))
    pos = [labels.index(lab) for lab in first]
    assert _rows(b, "sec-validity") == _order(results, labels, "inside_validity", False, pos)
    b.click(_col(b, "sec-distribution-primary-js-tv-w1", "Node TV"))  # lower is better
    assert _rows(b, "sec-distribution-primary-js-tv-w1") == _order(results, labels, "node_tv",
                                                                   True)
    b.click(_col(b, "sec-validity", "Method"))
    assert _rows(b, "sec-validity") == sorted(labels)

    # plots: 22 points, the front Python computes, 6 bar panels of 22 bars, 22 room lines
    assert b.js("document.querySelectorAll('#fig-pareto circle.pt').length") == 22
    front = b.js("[...document.querySelectorAll('#fig-pareto circle.pt.front')]"
                 ".map(c => +c.dataset.m).sort((a, b) => a - b)")
    pts = [(M.value(r, PARETO_X).mean, M.value(r, PARETO_Y).mean) for r in results]
    assert front == pareto_front(pts) and front
    panels = b.js("[...document.querySelectorAll('#fig-bars svg')].map(s => "
                  "[s.dataset.metric, s.querySelectorAll('rect.bar').length])")
    assert panels == [[n, 22] for n in BAR_METRICS]
    tip = b.js("document.querySelector('#fig-bars svg rect.bar title').textContent")
    assert M.value(results[0], "inside_validity") is not None
    assert f"{labels[0]}\nInside validity: 100.0% (5 seeds)" in tip
    assert b.js("document.querySelectorAll('#fig-rooms path.line').length") == 22

    # other Pareto axes (lower is better on one): the page's front is Python's front again
    b.js("""(() => { const x = document.getElementById("pareto-x");
        x.value = "inside_validity"; x.dispatchEvent(new Event("change"));
        const y = document.getElementById("pareto-y");
        y.value = "node_tv"; y.dispatchEvent(new Event("change")); })()""")
    front = b.js("[...document.querySelectorAll('#fig-pareto circle.pt.front')]"
                 ".map(c => +c.dataset.m).sort((a, b) => a - b)")
    pts = [(M.value(r, "inside_validity").mean, M.value(r, "node_tv").mean) for r in results]
    assert front == pareto_front(pts, (True, False))
    # zoom by dragging over the middle of the plot, double-click to zoom out
    box = b.js("""(() => { const s = document.querySelector('#fig-pareto svg');
        s.scrollIntoView({block: "center"}); const r = s.getBoundingClientRect();
        return [r.x, r.y, r.width, r.height]; })()""")
    b.drag(box[0] + box[2] * 0.3, box[1] + box[3] * 0.2, box[0] + box[2] * 0.8,
           box[1] + box[3] * 0.7)
    assert "Zoomed in" in b.js("document.querySelector('#fig-pareto figcaption').textContent")
    b.click("#fig-pareto svg", clicks=2)
    assert "Drag a rectangle" in b.js(
        "document.querySelector('#fig-pareto figcaption').textContent")

    # filter: a name substring, then fields (the --where keys), then an unknown field
    b.type("#filter", "remdm_cap")
    cap = [lab for lab in sorted(labels) if "remdm_cap" in lab]
    assert len(cap) == 10 and _rows(b, "sec-validity") == cap
    lb = b.js("""[...document.querySelectorAll('#sec-leaderboard-profile-preferred tbody tr')]
        .map(tr => [tr.cells[1].textContent, tr.checkVisibility()])""")
    assert [shown for _, shown in lb] == ["remdm_cap" in m for m, _ in lb]
    assert 0 < sum(shown for _, shown in lb) < len(lb)
    assert b.js("[...document.querySelectorAll('#fig-bars svg')]"
                ".map(s => s.querySelectorAll('rect.bar').length)") == [10] * 6
    assert b.js("document.querySelectorAll('#fig-pareto circle.pt').length") == 10
    assert b.js("document.getElementById('filter-status').textContent") == \
        "10 of 22 methods shown"
    b.type("#filter", "unmasking=llada !eta=0.2,0.4 top_p=0.9")
    want = [lab for lab, r in sorted(zip(labels, results)) if r.method_fields["unmasking"] ==
            "llada" and r.method_fields["eta"] not in (0.2, 0.4)
            and r.method_fields["top_p"] == 0.9]
    assert _rows(b, "sec-validity") == want and len(want) == 8
    b.type("#filter", "colour=red")
    assert "unknown field 'colour'" in b.js(
        "document.getElementById('filter-status').textContent")
    b.type("#filter", "")
    assert len(_rows(b, "sec-validity")) == 22

    # groups collapse and expand; diagnostic columns hide
    b.click("#sec-validity > summary")
    assert b.js("document.getElementById('sec-validity').open") is False
    assert _rows(b, "sec-validity") == []
    b.click("#expand-all")
    assert len(_rows(b, "sec-validity")) == 22
    b.click("#collapse-all")
    assert b.js("[...document.querySelectorAll('details.group')].every(d => !d.open)")
    b.click("#expand-all")
    diag = "document.querySelector('#sec-distribution-primary-js-tv-w1 th.diag').checkVisibility()"
    assert b.js(diag) is True
    b.click("#show-diag")
    assert b.js(diag) is False
    b.click("#show-diag")
    b.screenshot(tmp_path / "legacy_full.png", full=True)
    assert b.errors() == []


def test_synthetic_report_in_chromium(browser, synth_dir, synth_db, tmp_path):
    from bdgen.report.comparison_md import column_labels

    b = browser
    b.open((synth_dir / "comparison.html").as_uri())
    results = _results(synth_db)
    labels = column_labels(results)
    assert len(labels) == 5 and any(lab.startswith(HOSTILE + "/") for lab in labels)
    # Distribution has one metric (node_tv) for 5 methods: methods as rows
    sec = "sec-distribution-primary-js-tv-w1"
    assert _rows(b, sec) == labels
    assert labels[0] == "/".join(NO_NODE_TV)
    b.click(_col(b, sec, "Node TV"))
    order = _rows(b, sec)
    assert order == _order(results, labels, "node_tv", True)
    missing = labels[[(r.model, r.method) for r in results].index(NO_NODE_TV)]
    assert order[-1] == missing  # missing last ...
    b.click(_col(b, sec, "Node TV"))
    assert _rows(b, sec)[-1] == missing  # ... in both directions
    assert b.js(f"document.querySelector('#{sec} tbody tr:last-child td:last-child')"
                ".textContent") == "--"
    # the missing value has no bar but a "--" mark; the others have one each
    b.js("""(() => { const s = document.querySelector('#fig-bars select');
        s.value = "node_tv"; s.dispatchEvent(new Event("change")); })()""")
    assert b.js("document.querySelector('#fig-bars svg').querySelectorAll('rect.bar')"
                ".length") == 4
    assert b.js("[...document.querySelector('#fig-bars svg').querySelectorAll('text.missing')]"
                ".length") == 1
    assert b.js("document.querySelectorAll('#fig-rooms path.line').length") == 5
    assert b.js("document.querySelectorAll('#fig-pareto circle.pt').length") == 5
    # the filter matches the hostile label as plain text
    b.type("#filter", "</script>")
    assert _rows(b, sec) == [lab for lab in labels if "</script>" in lab]
    b.type("#filter", f"model={HOSTILE}")
    assert _rows(b, sec) == [lab for lab in labels if lab.startswith(HOSTILE)]
    b.type("#filter", "")
    b.screenshot(tmp_path / "synthetic.png", full=True)
    assert b.errors() == []
