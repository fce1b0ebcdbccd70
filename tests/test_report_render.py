"""Reports as files: what write_report writes per format, the LaTeX compiling with pdflatex
(standalone and through ``\\input``), and the HTML page being self-contained and rendering
every table and image in headless Chromium.

pdflatex and Chromium are found on PATH (``.ci/run`` installs Debian's minimal TeX and
``chromium``); a test that needs one skips where it is missing."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bench.report import ReportOptions, leaderboard_tables, write_report
from tests.test_report import BLENDED, results

GRID_TEXT = "name: paper  # <grid> & co\nseeds: [0, 1]\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_PLOTS = 2 * 2 * 2 + 1  # sensitivity: 2 axes × 2 values of the other axis × (ASR, C-Acc); 1 scatter


def nasty(df):
    """Labels with LaTeX and HTML specials in them."""
    df = df.copy()
    df["attack_label"] = df["attack_label"].replace("badnets", "bad_nets & #1 50% ~^\\ <b>|")
    df["defense_label"] = df["defense_label"].replace("ft", "ft_{lr}")
    return df


@pytest.fixture(scope="module")
def html_report(tmp_path_factory):
    """The html report of the synthetic frame, with plots: (out dir, written paths)."""
    out = tmp_path_factory.mktemp("html") / "report"
    paths = write_report(nasty(results()), out, "html", ReportOptions(cost=True), grid_text=GRID_TEXT)
    return out, paths


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


# --- files per format ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, files",
    [
        ("markdown", ["leaderboard.md"]),
        ("latex", ["leaderboard.tex", "leaderboard_standalone.tex"]),
        ("csv", ["leaderboard.csv"]),
        ("json", ["leaderboard.json"]),
        ("html", ["index.html"]),
    ],
)
def test_each_format_writes_its_files(tmp_path, fmt, files):
    out = tmp_path / "a" / "b"
    paths = write_report(results(), out, fmt, with_plots=False)
    assert paths == [out / name for name in files]
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert all(p.stat().st_size > 500 for p in paths)


def test_html_report_writes_page_and_every_plot_as_png_and_pdf(html_report):
    out, paths = html_report
    assert paths[0] == out / "index.html"
    plots = paths[1:]
    assert len(plots) == 2 * N_PLOTS
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    stems = {p.stem for p in plots}
    assert {p.stem for p in plots if p.suffix == ".png"} == {p.stem for p in plots if p.suffix == ".pdf"} == stems
    assert "asr_vs_poison_ratio_cifar10_preactresnet18_clean_fraction-0.05" in stems
    assert "acc_vs_clean_fraction_cifar10_preactresnet18_poison_ratio-0.01" in stems
    assert "scatter_acc_asr_cifar10_preactresnet18" in stems
    for path in plots:
        data = path.read_bytes()
        assert len(data) > 1000 and data[:8 if path.suffix == ".png" else 5] == (PNG_MAGIC if path.suffix == ".png" else b"%PDF-")


def test_html_page_is_self_contained(html_report):
    out, paths = html_report
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))  # in-page links only
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == N_PLOTS and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {p.read_bytes() for p in paths if p.suffix == ".png"}  # the very files written
    # tables, escaped labels, grid text, provenance
    assert page.count('<table class="leaderboard"') == 4
    assert "bad_nets &amp; #1 50% ~^\\ &lt;b&gt;|" in page and "<b>|" not in page
    assert html.escape(GRID_TEXT) in page
    for value in ("feedc0ffee", "0123abcd", "2.5.1", "cuda:0", "2025-03-01T12:00:00+00:00 to 2025-03-02T12:45:00+00:00"):
        assert value in page
    assert '<td class="failed">failed</td>' in page and '<td class="missing group-start">—</td>' in page
    assert "Avg. rank (DER, 1 of 2 attacks)" in page and "Defense time (s)" in page


# --- LaTeX compiles ------------------------------------------------------------------

PDFLATEX = shutil.which("pdflatex")


def pdflatex(directory: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", name],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.skipif(PDFLATEX is None, reason="pdflatex not installed")
def test_latex_compiles_standalone_and_as_input_fragment(tmp_path):
    df = nasty(results())
    df.loc[df["attack_label"].eq(BLENDED) & df["defense"].eq("ft") & df["seed"].eq(1), "status"] = "failed"  # † marks
    write_report(df, tmp_path, "latex", ReportOptions(cost=True), with_plots=False)
    assert r"$^\dagger$" in (tmp_path / "leaderboard.tex").read_text()
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\nText.\n\\input{leaderboard}\n\\end{document}\n"
    )
    for name in ("leaderboard_standalone.tex", "paper.tex"):
        run = pdflatex(tmp_path, name)
        assert run.returncode == 0, run.stdout[-3000:]
        pdf = tmp_path / name.replace(".tex", ".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert "Overfull \\hbox" not in (tmp_path / "leaderboard_standalone.log").read_text(errors="replace")
    # the check can fail: an unescaped special does not compile
    (tmp_path / "broken.tex").write_text(
        (tmp_path / "leaderboard_standalone.tex").read_text().replace(r"bad\_nets \&", "bad_nets &", 1)
    )
    assert pdflatex(tmp_path, "broken.tex").returncode != 0


# --- HTML renders in Chromium ----------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
# Added to a copy of the page only: after load, record what the browser made of every image and table.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = {images: [], tables: []};
  Array.prototype.forEach.call(document.images, function (img) {
    var box = img.getBoundingClientRect();
    out.images.push({alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                     area: box.width * box.height});
  });
  Array.prototype.forEach.call(document.querySelectorAll("table"), function (t) {
    var box = t.getBoundingClientRect();
    out.tables.push({id: t.id, rows: t.rows.length, cells: t.querySelectorAll("td").length, area: box.width * box.height});
  });
  var pre = document.createElement("pre");
  pre.id = "render-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""
BROKEN = '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB" alt="broken on purpose">'


def render_in_chromium(page: Path, profile: Path) -> dict:
    run = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.search(r'<pre id="render-check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page did not finish loading: {run.stdout[:500]!r} {run.stderr[-2000:]!r}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_html_renders_every_table_and_image_in_chromium(html_report, tmp_path):
    out, paths = html_report
    page = (out / "index.html").read_text(encoding="utf-8")
    # a copy with the probe, and one image that cannot decode, to show the check can fail
    probe = tmp_path / "index.html"
    probe.write_text(page.replace("</section>", BROKEN + "</section>", 1).replace("</body>", PROBE + "</body>"), encoding="utf-8")
    seen = render_in_chromium(probe, tmp_path / "profile")

    tables = leaderboard_tables(nasty(results()), ReportOptions(cost=True))
    boards = [t for t in seen["tables"] if t["id"].startswith("table-")]
    assert len(boards) == len(tables) == 4
    for board, table in zip(boards, tables):
        # 2 header rows, the attacks, Average, the rank and cost rows; 12 entries per attack row
        assert board["rows"] == 2 + len(table.rows) + 2
        assert board["cells"] == len(table.rows) * 12 + 2 * 3
        assert board["area"] > 10_000
    assert {t["id"] for t in seen["tables"]} >= {"grid-axes", "provenance-table"}
    assert all(t["area"] > 0 for t in seen["tables"])

    broken = [i for i in seen["images"] if i["alt"] == "broken on purpose"]
    assert len(broken) == 1 and broken[0]["width"] == 0  # the check tells a bad image
    images = [i for i in seen["images"] if i["alt"] != "broken on purpose"]
    sizes = sorted(png_size(p.read_bytes()) for p in paths if p.suffix == ".png")
    assert len(images) == N_PLOTS
    assert all(i["complete"] and i["area"] > 10_000 for i in images)
    assert sorted((i["width"], i["height"]) for i in images) == sizes  # every plot decoded at its full size
