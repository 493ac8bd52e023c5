"""Self-contained HTML reports of executed notebooks: they render with the network off.

The charts need no JavaScript: ``sparsedepth.paper.report.plots`` makes Altair display every chart as an SVG output
(rendered by vl-convert in the kernel), which nbconvert writes inline into the page and JupyterLab shows as
is. What nbconvert's ``lab`` template would still fetch from a CDN is left out: require.js and MathJax (no
notebook here uses LaTeX), Mermaid (no notebook draws a diagram) and the widget manager (no notebook uses
widgets). The CSS is inlined by nbconvert itself.

    from sparsedepth.paper.report.html import render_html, external_urls
    render_html(Path("build/notebooks/cpu/01_depth.ipynb"))   # -> 01_depth.html beside it
    assert not external_urls(html_text)
"""
from __future__ import annotations

import re
from pathlib import Path

from ...atomic import atomic_write_text

TEMPLATE_NAME = "sparsedepth_offline.html.j2"
# nbconvert's lab template with every block that loads a script from the network emptied.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""

# What a browser may fetch on its own: script sources, stylesheet and other <link> targets, CSS @import and
# url(), and any address quoted inside an inline script (loaders such as require.js or altair's HTML output
# build <script> tags from such strings). Plain hyperlinks (<a href>) and the SVG namespace are not fetched.
_FETCHES = (
    re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.I),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?([^\"'\s>]+)", re.I),
    re.compile(r"@import\s+(?:url\()?\s*[\"']?([^\"')\s;]+)", re.I),
    re.compile(r"\burl\(\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.I),
)
_SCRIPT_BODY = re.compile(r"<script\b[^>]*>(.*?)</script>", re.I | re.S)
_QUOTED_URL = re.compile(r"[\"'`]((?:https?:)?//[^\"'`\s]+)")


def external_urls(html: str) -> list[str]:
    """The network addresses (``http(s)://`` or ``//``) that a browser would load to show ``html``."""
    found = [m.group(1) for pattern in _FETCHES for m in pattern.finditer(html)]
    found += [m.group(1) for body in _SCRIPT_BODY.findall(html) for m in _QUOTED_URL.finditer(body)]
    return sorted({u for u in found if re.match(r"(?:https?:)?//", u, re.I)})


def exporter():
    """An nbconvert HTMLExporter that writes offline pages (see the module docstring)."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file=TEMPLATE_NAME,
                        extra_loaders=[jinja2.DictLoader({TEMPLATE_NAME: OFFLINE_TEMPLATE})])


def render_html(ipynb: Path) -> Path:
    """HTML report of an executed notebook, written atomically beside it (``x.ipynb`` -> ``x.html``).

    Raises ValueError naming the addresses if the page would still fetch anything from the network (an
    output that embeds a CDN script, say), so an offline-broken report is never written silently."""
    body, _ = exporter().from_filename(str(ipynb))
    urls = external_urls(body)
    if urls:
        raise ValueError(f"the HTML report of {ipynb} would load {', '.join(urls[:3])} from the network; "
                         f"display charts through sparsedepth.paper.report.plots (SVG outputs) instead of HTML/JavaScript")
    return atomic_write_text(Path(ipynb).with_suffix(".html"), body)
