"""Plan: full coverage, one writer per chunk, halos, last partial chunks, deterministic ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.plan import Box, Pad, grid_size, plan_archive, plan_scene, plan_token

SHAPES = [(1, 1), (1, 3001), (77, 3001), (2048, 2048), (2049, 4095), (3000, 2900), (5, 700)]


@pytest.mark.parametrize(("h", "w"), SHAPES)
@pytest.mark.parametrize(
    ("chunk", "halo", "unit_chunks"), [(512, 64, 1), (256, 300, 2), (64, 0, 3)]
)
def test_cores_cover_every_pixel_exactly_once(h, w, chunk, halo, unit_chunks):
    grid = plan_scene("s", h, w, chunk=chunk, halo=halo, unit_chunks=unit_chunks)
    hits = np.zeros((h, w), np.int32)
    for u in grid:
        hits[u.core.y0 : u.core.y1, u.core.x0 : u.core.x1] += 1
    assert hits.min() == 1 and hits.max() == 1, f"coverage {hits.min()}..{hits.max()}"
    assert len(grid) == grid.rows * grid.cols == sum(1 for _ in grid)


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_every_output_chunk_has_exactly_one_writer(h, w):
    chunk = 256
    grid = plan_scene("s", h, w, chunk=chunk, halo=32, unit_chunks=2)
    writers: dict[tuple[int, int], str] = {}
    for u in grid:
        # Cores are chunk-aligned: they start on the grid and end on it or at the scene edge.
        assert u.core.y0 % chunk == 0 and u.core.x0 % chunk == 0
        assert u.core.y1 % chunk == 0 or u.core.y1 == h
        assert u.core.x1 % chunk == 0 or u.core.x1 == w
        for idx in u.chunk_indices:
            assert idx not in writers, f"chunk {idx} written by {writers[idx]} and {u.unit_id}"
            writers[idx] = u.unit_id
    rows, cols = grid.chunk_grid
    assert set(writers) == {(r, c) for r in range(rows) for c in range(cols)}


def test_last_partial_chunk_is_planned():
    grid = plan_scene("s", 2049, 4095, chunk=2048, halo=256)
    assert (grid.rows, grid.cols) == (2, 2)
    last = grid.unit(1, 1)
    assert last.core == Box(2048, 2049, 2048, 4095)
    assert grid_size(2048, 2048) == 1 and grid_size(2049, 2048) == 2 and grid_size(0, 8) == 0


def test_halo_window_clipped_to_the_scene_and_padded_for_the_model():
    grid = plan_scene("s", 1000, 700, chunk=256, halo=64)
    inner = grid.unit(1, 1)
    assert inner.window == Box(192, 576, 192, 576) and inner.pad == Pad()
    corner = grid.unit(0, 0)
    assert corner.window == Box(0, 320, 0, 320) and corner.pad == Pad()
    edge = grid.unit(3, 2)  # last row (232 px high), last col (188 px wide)
    assert edge.core == Box(768, 1000, 512, 700)
    assert edge.window == Box(704, 1000, 448, 700)
    for u in grid:
        # Context exists only inside the scene: the model sees the window as read.
        assert u.input_shape == (u.window.height, u.window.width)
        c = u.core_in_input
        assert (c.y0, c.x0) == (u.core.y0 - u.window.y0, u.core.x0 - u.window.x0)
        assert (c.height, c.width) == (u.core.height, u.core.width)
    # With the model's size divisor, windows are reflected at bottom/right to its multiple.
    div = plan_scene("s", 1000, 700, chunk=256, halo=64, size_divisor=32).unit(3, 2)
    assert div.pad == Pad(bottom=-296 % 32, right=-252 % 32)
    assert div.input_shape == (320, 256)


def test_halo_larger_than_scene():
    grid = plan_scene("tiny", 3, 5, chunk=512, halo=100)
    (u,) = list(grid)
    assert u.window == Box(0, 3, 0, 5)
    assert u.pad == Pad() and u.input_shape == (3, 5)
    assert plan_scene("tiny", 3, 5, chunk=512, halo=100, size_divisor=32).unit(0, 0).pad == Pad(
        bottom=29, right=27)


def test_ids_are_deterministic_and_unique():
    a = [u.unit_id for u in plan_scene("a/b", 3000, 2900, chunk=512, halo=64)]
    b = [u.unit_id for u in plan_scene("a/b", 3000, 2900, chunk=512, halo=64)]
    assert a == b
    assert len(set(a)) == len(a)
    assert a[0] == "a/b#r0c0" and a[-1] == "a/b#r5c5"


def test_plan_streams_and_sums():
    @dataclass
    class S:
        scene_id: str
        shape: tuple[int, int, int]
        dtype: str

    scenes = [S("x", (4, 1000, 700), "uint16"), S("y", (3, 77, 3001), "uint8")]
    plan = plan_archive(scenes, chunk=256, halo=64, bands=[0, 1, 2])
    units = plan.units()
    assert iter(units) is units  # a generator, nothing materialised up front
    listed = list(units)
    assert len(listed) == len(plan) == 4 * 3 + 1 * 12
    s = plan.summary()
    assert s.output_pixels == 1000 * 700 + 77 * 3001
    assert s.input_pixels == sum(u.input_shape[0] * u.input_shape[1] for u in listed)
    read_px = [u.window.area for u in listed]
    assert s.bytes_read == sum(read_px[:12]) * 3 * 2 + sum(read_px[12:]) * 3 * 1
    assert s.chunks == 12 + 12
    assert s.estimated_seconds(2.0) == pytest.approx(s.input_pixels / 2e6)


def test_plan_token_is_order_independent_and_sensitive():
    assert plan_token({"a": 1, "b": [1, 2]}) == plan_token({"b": [1, 2], "a": 1})
    assert plan_token({"a": 1}) != plan_token({"a": 2})


@pytest.mark.parametrize("bad", [dict(chunk=0, halo=1), dict(chunk=8, halo=-1)])
def test_bad_grid_arguments_name_them(bad):
    with pytest.raises(ValueError, match="chunk="):
        plan_scene("s", 10, 10, **bad)
    with pytest.raises(ValueError, match="'s' has shape"):
        plan_scene("s", 0, 10, chunk=8, halo=0)
