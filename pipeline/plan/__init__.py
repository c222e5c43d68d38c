"""Work plan: which windows each scene is read in and which output chunks they write.

Pure: computed from scene metadata (shape, dtype) alone, never from pixels; no Ray, Dask,
zarr or fsspec here, so ``len()`` of a plan is known before any read and tests are instant.

Per scene the output is cut into a grid of ``chunk x chunk`` chunks; the grid includes the
last partial chunk of each axis, so a scene of extent ``E`` has ``ceil(E / chunk)`` chunks
along that axis. A :class:`WorkUnit` is one aligned block of ``unit_chunks x unit_chunks``
chunks (its *core*) plus a ``halo`` of context on every side (its *window*), clipped to the
scene: context exists only where the scene has pixels, so nothing is invented beyond its
edges. The window is padded only as the model needs: by reflection at its bottom/right to a
multiple of ``size_divisor`` (:class:`Pad`, :func:`pipeline.stitch.reflect_pad`; 1 = none,
the model pads itself). A 7 x 100000 strip thus costs about its own pixels, not
``(7 + 2 * halo)`` rows per window, and with a halo at least the model's receptive field
the tiled labels equal one forward pass over the whole scene. Cores tile the scene without
overlap, so every output chunk has exactly one writer (race-free, idempotent writes).

Plans stream: :meth:`Plan.units` is a generator, so an archive of 10^5 windows never
materialises as a list (let alone as futures).

Modules: :mod:`~pipeline.plan.grid` (one scene's units), :mod:`~pipeline.plan.archive` (every
scene, sizes, resume token), both pure and re-exported here; :mod:`~pipeline.plan.preflight`
(the checks a scene passes before it is planned: bands, layout, and a small sample of its
values read through :mod:`pipeline.io.readers`, the one module here that reads pixels).
"""

from pipeline.plan.archive import Plan, PlanSummary, SceneLike, plan_archive, plan_token
from pipeline.plan.grid import Box, Pad, SceneGrid, WorkUnit, grid_size, plan_scene

__all__ = [
    "Box",
    "Pad",
    "Plan",
    "PlanSummary",
    "SceneGrid",
    "SceneLike",
    "WorkUnit",
    "grid_size",
    "plan_archive",
    "plan_scene",
    "plan_token",
]
