"""The generated results page, the per-experiment tables and the README's results block.

The README holds no result number typed by hand: its "Reproduction status" section is prose without digits
plus a block that ``sparsedepth.paper.report.results_page`` writes from the committed scorecards; the tests below fail
when that block disagrees with the tables or when a digit appears in the section outside it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from sparsedepth.paper.pipeline.results import stale_results
from sparsedepth.paper.report import results_page as rp
from sparsedepth.paper.report.rungs import RUNGS
from sparsedepth.paper.spec.experiments import profile_experiments

REPO = Path(__file__).resolve().parents[3]
COMMITTED = [p for p in rp.PROFILES if (REPO / "paper_results" / p / "tables" / "scorecard.csv").is_file()]
PAGES = [p for p in dict.fromkeys(rp.PROFILES + RUNGS) if (REPO / "paper_results" / p / "RESULTS.md").is_file()]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"^## ", text[start + len(heading):], flags=re.M)
    return text[start: start + len(heading) + nxt.start()] if nxt else text[start:]


def test_readme_results_block_matches_the_committed_tables():
    if not COMMITTED:
        pytest.skip("no committed results")
    text = (REPO / "README.md").read_text()
    block = text[text.index(rp.README_BEGIN): text.index(rp.README_END) + len(rp.README_END)]
    assert block == rp.readme_block(REPO), \
        "README's results block is out of date: run `python -m sparsedepth.paper.report.results_page --readme`"


def test_readme_results_section_has_no_hand_typed_numbers():
    text = (REPO / "README.md").read_text()
    section = _section(text, "## Reproduction status")
    head, rest = section.split(rp.README_BEGIN, 1)
    prose = head + rest.split(rp.README_END, 1)[1]
    prose = re.sub(r"\([^)]*\.md\)|`[^`]*`", "", prose)  # link targets and code name files, not results
    assert not re.findall(r"\d", prose), f"hand-typed numbers in the README's results section: {prose!r}"


@pytest.mark.parametrize("profile", PAGES)
def test_committed_results_page_is_current_and_links_existing_figures(profile):
    page = REPO / "paper_results" / profile / "RESULTS.md"
    text = page.read_text()
    assert text == rp.results_markdown(profile, REPO), \
        f"{page} is out of date: run `python -m sparsedepth.paper.report.results_page --profile {profile}`"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    sections = [(i, s) for i, s in enumerate(rp.SECTIONS, 1) if s.experiment in profile_experiments(profile)]
    assert len(links) >= sum(len(s.figures) for _, s in sections)
    for link in links:  # relative, so they render on a code host
        assert not link.startswith(("/", "http")), link
        assert (page.parent / link).resolve().is_file(), link
    # every section in the paper's order, each with the paper's numbers, ours and a verdict
    positions = [text.index(f"## {i}. {s.title}") for i, s in sections]
    assert positions == sorted(positions)
    # results a rerun would remake (an older probe code version) are said to be there, with their number
    stale = stale_results(profile, REPO)
    assert ("Older results" in text) == bool(stale)
    if stale:
        assert f"{sum(n for per in stale.values() for n in per.values())} results on this page" in text
    card = pd.read_csv(REPO / "paper_results" / profile / "tables" / "scorecard.csv")
    for cid in card["id"]:
        assert f"(`{cid}`)" in text, f"claim {cid} has no verdict on the page"


def _fake_results(root: Path, profile: str = "p") -> None:
    tdir = root / "paper_results" / profile / "tables"
    tdir.mkdir(parents=True)
    pd.DataFrame([
        {"experiment": "depth", "variant": "L4", "setting": "L=4", "metric": "variance_end", "paper": 400.0,
         "ours": 3.0, "ours_min": 2.5, "ours_max": 3.5},
        {"experiment": "gqa", "variant": "G1", "setting": "G=1", "metric": "ppl", "paper": 14.52, "ours": 250.0,
         "ours_min": None, "ours_max": None},
    ]).to_csv(tdir / "paper_vs_ours.csv", index=False)
    pd.DataFrame([{"id": "depth.variance", "experiment": "depth", "claim": "variance grows", "status": "holds",
                   "effect": 0.4321, "se": 0.01, "noise": "2 seeds", "rule": "slope > 0", "ours": "", "paper": "",
                   "detail": ""}]).to_csv(tdir / "scorecard.csv", index=False)
    figs = root / "figures" / profile
    figs.mkdir(parents=True)
    (figs / "depth_scores.png").write_bytes(b"\x89PNG")  # only its presence matters to the page


def test_write_results_from_tables_alone(tmp_path):
    _fake_results(tmp_path)
    page = rp.write_results("p", tmp_path)
    text = page.read_text()
    assert "+0.432 ± 0.01" in text and "**holds**" in text
    assert "](../../figures/p/depth_scores.png)" in text
    assert "_Figure `depth_jacobian` not generated for this profile._" in text
    assert "_No results of ours for this figure._" in text  # recipe: nothing in the fake table
    assert "_Figure `theory_variance` not generated" in text
    assert "## 4. Weight decay" in text and "runs only" not in text  # a profile of every sweep: every section
    assert "Older results" not in text  # no result made by earlier code (none is recorded here)
    _fake_results(tmp_path, "gpu-wide")  # a rung leaves the theory simulation to the gpu profile
    wide = rp.write_results("gpu-wide", tmp_path).read_text()
    assert "leaves it to the gpu profile" in wide
    # and the sweeps it does not run: their sections and claims are on the gpu page, not here as "missing"
    assert "`gpu-wide` runs only the depth sweep (" in wide and "paper_results/gpu/RESULTS.md" in wide
    assert "## 3. Depth: layer effectiveness scores" in wide and "## 9. Theory" in wide
    assert "Weight decay" not in wide and "(#4-weight-decay)" not in wide
    gqa = (tmp_path / "paper_results" / "p" / "tables" / "paper_vs_ours_gqa.md").read_text()
    assert "`ppl`: validation perplexity" in gqa and "`ours_min`:" in gqa and "| G=1 | ppl |" in gqa
    assert "variance_end" not in gqa  # one experiment per table
    csv = pd.read_csv(tmp_path / "paper_results" / "p" / "tables" / "paper_vs_ours_depth.csv")
    assert list(csv["metric"]) == ["variance_end"] and "experiment" not in csv.columns


def test_every_table_metric_has_a_unit():
    from sparsedepth.paper.analysis.scorecard import TABLE_METRICS

    missing = {m for ms in TABLE_METRICS.values() for m in ms} - set(rp.UNITS)
    assert not missing, f"metrics without a unit in results_page.UNITS: {missing}"


def test_missing_tables_and_markers_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="make figures"):
        rp.results_markdown("p", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    with pytest.raises(ValueError, match="no results block"):
        rp.update_readme(readme, tmp_path)


def test_a_sweep_probed_along_training_shows_its_trajectories_and_rungs_after_its_last_section(tmp_path):
    _fake_results(tmp_path)
    assert "Along training" not in rp.write_results("p", tmp_path).read_text()  # no trajectories, no rungs table
    (tmp_path / "figures" / "p" / "depth_trajectories.png").write_bytes(b"\x89PNG")
    tdir = tmp_path / "paper_results" / "p" / "tables"
    (tdir / "depth_trajectory_trends.md").write_text("trends")
    pd.DataFrame([{"id": "depth.jacobian_depth", "claim": "||J - I|| is lower for deeper models", "paper": "",
                   "rung": r, "d_model": d, "tokens": t, "status": s, "effect": e, "se": se, "with scale": w, "ours": ""}
                  for r, d, t, s, e, se, w in (("gpu", 512, 98304000, "holds", 0.192, 0.0063, "—"),
                                               ("gpu-long", 512, 301465600, "missing", None, None, "—"))]
                 ).to_csv(tdir / "depth_rungs.csv", index=False)
    text = rp.write_results("p", tmp_path).read_text()
    block = text[text.index("**Along training and across the gpu rungs**"):]
    assert text.index("## 3. Depth: layer effectiveness") < text.index("**Along training") < text.index("## 4.")
    assert text.count("**Along training") == 1  # once per sweep, after its last section
    assert "](../../figures/p/depth_trajectories.png)" in block and "`tables/depth_trajectory_trends.md`" in block
    assert "usefulness_along_training" not in block  # a figure the profile lacks is left out, not announced
    assert "| \\|\\|J - I\\|\\| is lower for deeper models | gpu | 512 | 98M | holds | +0.192 ± 0.0063 | — |" in block
    assert "| gpu-long | 512 | 301M | missing | – | — |" in block
