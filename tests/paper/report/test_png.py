"""Lossless PNG recompression of the saved figures: same pixels, fewer bytes, deterministic, bad input named."""
from __future__ import annotations

import struct
import zlib

import pytest

from sparsedepth.paper.report import png


def _png(width: int, height: int, level: int, split: int = 1) -> bytes:
    """A real RGBA PNG of a gradient, deflated at ``level``, its data in ``split`` IDAT chunks."""
    rows = b"".join(b"\0" + bytes((x * 7 + y) % 256 for x in range(width) for _ in range(4)) for y in range(height))
    data = zlib.compress(rows, level)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    step = -(-len(data) // split)
    idats = [png._chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step)]
    return png.SIGNATURE + png._chunk(b"IHDR", ihdr) + png._chunk(b"tEXt", b"k\0v") + b"".join(idats) + \
        png._chunk(b"IEND", b"")


def test_recompress_keeps_every_pixel_and_chunk_and_shrinks_a_light_deflate():
    light = _png(120, 80, level=1, split=3)
    small = png.recompress(light)
    assert png.pixels(small) == png.pixels(light)
    assert len(small) < len(light)
    assert [k for k, _ in png.chunks(small)] == [b"IHDR", b"tEXt", b"IDAT", b"IEND"]  # one IDAT, in place
    assert dict(png.chunks(small))[b"tEXt"] == b"k\0v"
    assert png.recompress(small) == small  # deterministic: replotting unchanged data changes no byte


def test_saved_figures_are_recompressed(tmp_path):
    import altair as alt
    import pandas as pd

    from sparsedepth.paper.report import plots

    df = pd.DataFrame({"x": range(50), "y": [i * i for i in range(50)]})
    paths = plots.save_chart(alt.Chart(df).mark_line().encode(x="x", y="y"), "demo", "smoke", df, root=tmp_path)
    data = paths["png"].read_bytes()
    assert png.recompress(data) == data  # already at level 9: nothing left to gain


@pytest.mark.parametrize("bad, match", [
    (b"GIF89a", "signature is missing"),
    (png.SIGNATURE + b"\0\0\0\x05IHDR", "runs past the end|truncated"),
    (png.SIGNATURE + png._chunk(b"IHDR", b"x")[:-1] + b"\0", "fails its CRC"),
    (png.SIGNATURE + png._chunk(b"IHDR", b"x"), "no IEND"),
])
def test_bad_input_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        png.chunks(bad)
