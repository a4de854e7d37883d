"""The HTML report: self-contained (inline CSS, base64 PNGs), and it renders in a browser.

The browser check opens the page in headless Chromium (installed by scripts/test.sh when
missing) and reads back the rendered DOM; a screenshot is kept in the pytest tmp dir.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.report.comparison_md import parse_markdown_tables
from bdgen.report.html import pareto_front

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, legacy_dir):
    """`bdgen report` (default mode, with expectations) on a store holding the legacy files."""
    from bdgen.store.api import Store

    tmp = tmp_path_factory.mktemp("html")
    store = Store.open(str(tmp / "s.db"))
    try:
        store.import_result_files([legacy_dir])
    finally:
        store.close()
    out = tmp / "report"
    res = CliRunner().invoke(cli, ["report", "--db", str(tmp / "s.db"), "--out", str(out),
                                   "--expect", "v2_remasking"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def test_pareto_front():
    pts = [(0.9, 0.1), (0.5, 0.5), (0.4, 0.4), (0.1, 0.9), (0.9, 0.05)]
    assert pareto_front(pts) == [0, 1, 3]


def test_html_is_self_contained(report_dir):
    page = (report_dir / "comparison.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # no external resources
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == 3
    md_tables = parse_markdown_tables((report_dir / "comparison.md").read_text())
    assert page.count("<table>") == len(md_tables)


def test_html_renders_in_chromium(report_dir, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/test.sh installs it with apt-get as root)")
    url = (report_dir / "comparison.html").as_uri()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert dom.count("<table>") == 9  # config + 5 families + denoising + leaderboard + verdicts
    assert "Inside validity" in dom and "llada_topp0.9_remdm_confidence_tsw1.0" in dom
    assert len(re.findall(r"<img ", dom)) == 3
    shot = tmp_path / "comparison.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1400,2000", url],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank page
