"""Zarr archives of scenes: write and read one scene per group, or a whole archive by seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._classes import CLASSES, CONTEXT_CLASSES, THIN_CLASSES, Scene
from ._scene import generate_scene

_ATTR_KEY = "hgn_synthetic"  # group attribute holding the generator record
_LAYOUTS = {"CHW": ("c", "y", "x"), "HWC": ("y", "x", "c")}


def _open_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    if url.startswith("file://"):
        # fsspec's local filesystem does not create parent folders of new files by default
        return {"storage_options": {"auto_mkdir": True} | (storage_options or {})}
    # zarr refuses storage_options for plain local paths, so pass them only when given
    return {} if storage_options is None else {"storage_options": storage_options}


def write_scene_zarr(
    path_or_url: str | Path,
    scene: Scene,
    chunks: int = 512,
    zarr_format: int = 3,
    layout: str = "CHW",
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write ``scene`` as a zarr group with arrays "image" and "labels"; returns the location.

    ``path_or_url``: a local path or an fsspec URL (``file://``, ``s3://...`` with
    ``storage_options``). "image" is stored (C, H, W) or, with ``layout="HWC"``, (H, W, C),
    chunked ``chunks`` px square with all bands in each chunk; "labels" is (H, W) uint8. Arrays
    carry dimension names (zarr v3 ``dimension_names``, v2 ``_ARRAY_DIMENSIONS``) and a
    ``layout`` attribute; the group attribute ``hgn_synthetic`` records the seed, generator
    parameters, layout and classes. An existing group at the location is replaced.
    """
    import zarr  # local import: generating scenes needs no zarr

    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format={zarr_format!r}: expected 2 or 3")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {sorted(_LAYOUTS)}")
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise ValueError(f"chunks={chunks!r}: expected a positive int (chunk side in px)")
    image = scene.image
    if image.ndim != 3 or scene.labels.shape != image.shape[1:]:
        raise ValueError(
            f"scene seed={scene.seed}: image shape {image.shape} and labels shape "
            f"{scene.labels.shape} do not match (expected (C, H, W) and (H, W))"
        )
    c, h, w = image.shape
    cy, cx = min(chunks, h), min(chunks, w)
    if layout == "HWC":
        image = np.moveaxis(image, 0, -1)
        image_chunks: tuple[int, ...] = (cy, cx, c)
    else:
        image_chunks = (c, cy, cx)
    record = {
        "seed": scene.seed,
        "layout": layout,
        "params": scene.params,
        "classes": [
            {"id": i, "name": k.name, "color": list(k.color)} for i, k in enumerate(CLASSES)
        ],
        "thin_classes": list(THIN_CLASSES),
        "context_classes": list(CONTEXT_CLASSES),
    }
    group = zarr.open_group(
        str(path_or_url),
        mode="w",
        zarr_format=zarr_format,
        **_open_kwargs(str(path_or_url), storage_options),
    )
    group.attrs[_ATTR_KEY] = record
    for name, data, chunk_shape, dims in (
        ("image", image, image_chunks, _LAYOUTS[layout]),
        ("labels", scene.labels, (cy, cx), ("y", "x")),
    ):
        attrs: dict[str, Any] = {"layout": layout} if name == "image" else {}
        extra: dict[str, Any] = {}
        if zarr_format == 3:
            extra["dimension_names"] = dims
        else:
            attrs["_ARRAY_DIMENSIONS"] = list(dims)  # xarray's convention for zarr v2
        arr = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunk_shape,
            attributes=attrs,
            fill_value=0,
            **extra,
        )
        arr[...] = data
    return str(path_or_url)


def read_scene_zarr(
    path_or_url: str | Path, storage_options: dict[str, Any] | None = None
) -> Scene:
    """Read a scene written by :func:`write_scene_zarr` (either zarr format, either layout)."""
    import zarr

    group = zarr.open_group(
        str(path_or_url), mode="r", **_open_kwargs(str(path_or_url), storage_options)
    )
    missing = [k for k in ("image", "labels") if k not in group]
    if missing:
        raise ValueError(
            f"{path_or_url}: zarr group lacks array(s) {missing}; expected a scene written by "
            "hgn_model.data.synthetic.write_scene_zarr (arrays 'image' and 'labels')"
        )
    record = dict(group.attrs.get(_ATTR_KEY, {}))
    arr = group["image"]
    layout = arr.attrs.get("layout", record.get("layout", "CHW"))
    if layout not in _LAYOUTS:
        raise ValueError(f"{path_or_url}: image attribute layout={layout!r} is not CHW or HWC")
    image = np.asarray(arr[...])
    if layout == "HWC":
        image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
    labels = np.asarray(group["labels"][...])
    return Scene(
        image=image,
        labels=labels,
        seed=int(record.get("seed", -1)),
        params=dict(record.get("params", {})),
    )


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root) / name)


def make_archive(
    root: str | Path,
    seeds: Sequence[int],
    sizes: Sequence[int] | Sequence[Sequence[int]],
    bands: int = 3,
    dtype: str = "uint8",
    zarr_format: int = 3,
    *,
    layout: str = "CHW",
    chunks: int = 512,
    bit_depth: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Generate one scene per seed and write each as ``<root>/scene-<seed>.zarr``.

    ``sizes``: one (height, width) for every scene, or one (height, width) per seed. Returns the
    scene locations (local paths or URLs) in seed order.
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r}: each seed names one scene, so they must differ")
    if len(sizes) == 2 and all(isinstance(v, (int, np.integer)) for v in sizes):
        shapes = [(int(sizes[0]), int(sizes[1]))] * len(seeds)  # type: ignore[arg-type]
    else:
        shapes = [(int(hw[0]), int(hw[1])) for hw in sizes]  # type: ignore[index]
        if len(shapes) == 1:
            shapes *= len(seeds)
        if len(shapes) != len(seeds):
            raise ValueError(
                f"sizes has {len(shapes)} entries for {len(seeds)} seeds: give one "
                "(height, width) for all scenes or one per seed"
            )
    root = str(root)
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, (h, w) in zip(seeds, shapes, strict=True):
        scene = generate_scene(seed, h, w, bands=bands, dtype=dtype, bit_depth=bit_depth)
        paths.append(
            write_scene_zarr(
                _join(root, f"scene-{seed}.zarr"),
                scene,
                chunks=chunks,
                zarr_format=zarr_format,
                layout=layout,
                storage_options=storage_options,
            )
        )
    return paths
