"""HTML reports render offline: no external script or stylesheet, charts as inline SVG; a headless Chromium
with the network cut opens one from disk and finds the drawn chart. The notebooks name the package's kernel."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from sparsedepth.paper.report import plots  # noqa: F401  (sets the SVG renderer, as every notebook does)
from sparsedepth.paper.report.html import external_urls, render_html

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chart():
    df = pd.DataFrame({"layer": [1, 2, 3, 1, 2, 3], "value": [1.0, 2.0, 4.0, 1.0, 1.5, 2.0],
                       "label": ["L=3 dense"] * 3 + ["L=3 moe"] * 3})
    return plots.per_layer_chart(df, ["L=3 dense", "L=3 moe"], y_title="variance", title="per-layer variance",
                                 sweep_title="model")


def _notebook(path: Path, bundle: dict) -> Path:
    """An executed-looking notebook whose one code cell displayed ``bundle``."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("chart")
    cell.outputs = [nbformat.v4.new_output("display_data", data=bundle)]
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), cell]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def report(tmp_path) -> Path:
    bundle = _chart()._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    return render_html(_notebook(tmp_path / "report.ipynb", bundle))


def test_charts_display_as_svg_and_the_report_loads_nothing(report):
    html = report.read_text()
    assert not external_urls(html), external_urls(html)
    images = re.findall(r'<img[^>]*src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(images) == 1, "the chart is not embedded as an SVG image"
    svg = base64.b64decode(images[0]).decode()
    assert 'class="marks"' in svg and "variance" in svg  # vl-convert's drawing, axis title included


def test_external_urls_catches_cdn_scripts_and_stylesheets():
    page = ('<link rel="stylesheet" href="https://cdn.example.org/a.css"><script src="//cdn.example.org/b.js">'
            '</script><script>require.config({paths: {vega: "https://cdn.jsdelivr.net/npm/vega@6?noext"}})</script>'
            '<style>@import url("https://fonts.example.org/c.css");</style><a href="https://example.org/doc">doc</a>'
            '<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert external_urls(page) == ["//cdn.example.org/b.js", "https://cdn.example.org/a.css",
                                   "https://cdn.jsdelivr.net/npm/vega@6?noext", "https://fonts.example.org/c.css"]


def test_a_cdn_output_is_refused_not_written(tmp_path):
    nb = _notebook(tmp_path / "cdn.ipynb", {"text/html": '<script src="https://cdn.jsdelivr.net/npm/vega@6"></script>',
                                            "text/plain": "chart"})
    with pytest.raises(ValueError, match="cdn.jsdelivr.net"):
        render_html(nb)
    assert not (tmp_path / "cdn.html").exists()


def test_notebooks_name_the_package_kernel():
    makefile = (ROOT / "Makefile").read_text()
    assert "ipykernel install --sys-prefix --name sparsedepth" in makefile
    import jupytext

    sources = sorted((ROOT / "notebooks").glob("*.py"))
    assert sources
    for path in sources:
        spec = jupytext.read(path).metadata["kernelspec"]
        assert spec["name"] == "sparsedepth", f"{path.name} names kernel {spec['name']!r}"


# Loads the report in a frame and writes what it drew into this page, which --dump-dom then prints: decoded
# images (the SVG charts) and anything vega-embed would draw (svg.marks, canvas) inside the outputs.
PROBE_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="%s" width="1200" height="900"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const imgs = [...doc.querySelectorAll(".jp-OutputArea-output img")];
  const drawn = imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.naturalWidth + "x" + i.naturalHeight);
  const vega = doc.querySelectorAll(".jp-OutputArea-output svg.marks, .jp-OutputArea-output canvas").length;
  document.getElementById("result").textContent = JSON.stringify({images: imgs.length, drawn, vega});
});
</script></body></html>"""


def _drawn_offline(page: Path, tmp_path: Path) -> dict:
    """What Chromium drew for ``page`` with every network request refused (a dead proxy and a resolver that
    finds no host), i.e. what a reader without internet sees."""
    probe = tmp_path / f"probe_{page.stem}.html"
    probe.write_text(PROBE_PAGE % page.name)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--allow-file-access-from-files",
           f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert found and found.group(1) != "pending", f"the report did not load in Chromium: {dom[:300]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make test installs it)")
def test_report_renders_in_offline_chromium(report, tmp_path):
    seen = _drawn_offline(report, tmp_path)
    assert seen["images"] == 1 and len(seen["drawn"]) == 1, seen
    width, height = map(int, seen["drawn"][0].split("x"))
    assert width > 200 and height > 100, seen

    # Control: altair's own HTML output, which loads vega from a CDN, draws nothing under the same conditions,
    # so the check above would catch a report that needs the network.
    cdn = report.with_name("cdn.html")
    nb = _notebook(report.with_name("cdn.ipynb"), {"text/html": _chart().to_html(fullhtml=False), "text/plain": "chart"})
    from sparsedepth.paper.report.html import exporter

    cdn.write_text(exporter().from_filename(str(nb))[0])
    assert _drawn_offline(cdn, tmp_path) == {"images": 0, "drawn": [], "vega": 0}
