"""Query what a run wrote: scenes, metadata, windows, class areas, PNG previews.

Works on any output root (local path or ``s3://``) in the layout of
:mod:`pipeline.io.omezarr`: one ``<scene_id>.ome.zarr`` per scene, labels under
``labels/segmentation/<level>``, optional confidence at ``<level>`` of the root image, and
the ledger under ``_hgn/`` (:mod:`pipeline.state.ledger`) for scene states.

Boxes are in level-0 pixels, half-open ``(y0, y1, x0, x1)``, whatever level is read: level
``k`` returns rows ``floor(y0 / 2^k) .. ceil(y1 / 2^k)`` (each coarse pixel summarises a
``2^k x 2^k`` block). Geographic boxes ``(xmin, ymin, xmax, ymax)`` are in the scene's CRS
and need a georeference. Class areas are exact at level 0; at a coarser level each coarse
pixel counts for the level-0 pixels it covers inside the box, so totals stay exact and only
the split between classes is approximate (fast: 4^k fewer pixels read).

Modules: ``store`` (:class:`OutputStore`: the scenes of an output root), ``view``
(:class:`SceneView`: one scene's windows and class areas), ``preview`` (PNG previews, the
source image), ``stats`` (per-class counts and areas of a window), ``areas`` (geodesic pixel
areas), ``coverage`` (which chunks a query may trust).
"""

from pipeline.errors import QueryError, SceneNotFoundError
from pipeline.query.stats import ClassRow, ClassStats
from pipeline.query.store import OutputStore, SceneSummary
from pipeline.query.view import SceneView

__all__ = [
    "ClassRow",
    "ClassStats",
    "OutputStore",
    "QueryError",
    "SceneNotFoundError",
    "SceneSummary",
    "SceneView",
]
