"""The gpu rungs side by side per claim, from hand-made scorecards (a rung without one is left out)."""
from __future__ import annotations

import pandas as pd
import pytest

from sparsedepth.paper.pipeline import results as R
from sparsedepth.paper.analysis.scorecard import SCALE
from sparsedepth.paper.report import rungs


def card(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "experiment", "claim", "status", "effect", "se", "ours", "paper", SCALE])


def write(root, profile: str, frame: pd.DataFrame) -> None:
    path = rungs.scorecard_path(profile, root)
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)


def test_one_table_per_claim_with_a_row_per_rung_that_has_results(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    write(tmp_path, "gpu", card([
        ("depth.variance", "depth", "last-layer variance grows with depth", "holds", 0.43, 0.02, "L=12: 11.7",
         "L=12: 400", "—"),
        ("gqa.variance", "gqa", "variance falls with G", "inconclusive", 0.01, 0.02, "G=1: 20", "G=1: 10", "—")]))
    write(tmp_path, "gpu-long", card([
        ("depth.variance", "depth", "last-layer variance grows with depth", "holds", 0.61, 0.03, "L=12: 15.2",
         "L=12: 400",
         "yes"),
        ("weight_decay.variance", "weight_decay", "variance falls with λ", "contradicted", -0.2, 0.05, "", "λ=0: 900",
         "flat")]))
    # no gpu-wide scorecard yet: that rung is left out
    tables = rungs.rung_tables()
    assert list(tables) == ["depth.variance", "gqa.variance", "weight_decay.variance"]
    depth = tables["depth.variance"]
    assert list(depth.rung) == ["gpu", "gpu-long"] and list(depth.status) == ["holds", "holds"]
    assert list(depth.effect) == [0.43, 0.61] and list(depth.d_model) == [512, 512]
    assert list(depth.tokens) == [1500 * 65536, 4600 * 65536]  # the depth sweep's tokens per run at each rung
    assert depth.attrs["paper"] == "L=12: 400" and list(depth["with scale"]) == ["—", "yes"]
    gqa = tables["gqa.variance"]  # gpu-long has no GQA sweep: "not run", no token count
    assert list(gqa.status) == ["inconclusive", rungs.NOT_RUN] and pd.isna(gqa.tokens.iloc[1])
    text = rungs.rungs_markdown(tables)
    assert "### depth.variance: last-layer variance grows with depth" in text and "Paper: L=12: 400" in text
    assert "| gpu-long | 512 | 301M | holds | 0.61 | 0.03 | yes | L=12: 15.2 |" in text


def test_all_three_rungs_and_none(tmp_path, monkeypatch):
    monkeypatch.setenv(R.ROOT_ENV, str(tmp_path))
    assert rungs.rung_tables() == {}
    row = [("depth.permutation", "depth", "permutation score falls with depth", "holds", 0.06, 0.002, "", "", "no")]
    for profile in rungs.RUNGS:
        write(tmp_path, profile, card(row))
    t = rungs.rung_tables()["depth.permutation"]
    assert list(t.rung) == list(rungs.RUNGS) and list(t.d_model) == [512, 512, 1024]
    assert list(t.tokens) == [1500 * 65536, 4600 * 65536, 1500 * 65536]
    broken = tmp_path / "paper_results" / "gpu" / "tables" / "scorecard.csv"
    broken.write_text("claim,status\nx,holds\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['experiment', 'id'\]"):
        rungs.rung_tables()
