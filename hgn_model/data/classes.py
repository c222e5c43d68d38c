"""The class table of a training run: ids in the masks, names, colours, ignored classes.

A table is a list of ``{id, name, color?, ignore?}`` given inline in the training config or
as a YAML file holding such a list. ``id`` is the value of the class in the masks (any
0..65535), or, for RGB-coded masks (DeepGlobe), ``color`` is. The network's output label of a
class is its position in the table sorted by id; that order, names, colours and ignore flags go
into the checkpoint and from there into every output's metadata. ``ignore`` classes (and mask
values not in the table, when ``unlisted: ignore``) are left out of the loss and the metrics.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["IGNORE_INDEX", "ClassEntry", "ClassTable", "load_class_table"]

IGNORE_INDEX = 255  # label index the losses and metrics skip


class ClassEntry(BaseModel):
    """One class of the table."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: int = Field(ge=0, le=65535, description="value of this class in the masks")
    name: str = Field(min_length=1)
    color: tuple[int, int, int] | tuple[int, int, int, int] | None = Field(
        None, description="RGB(A) 0-255: display colour, and the mask colour of RGB masks")
    ignore: bool = Field(False, description="left out of the loss and the metrics")

    @field_validator("color")
    @classmethod
    def _byte_range(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(not 0 <= c <= 255 for c in v):
            raise ValueError(f"color {list(v)}: every component must be 0-255")
        return v


class ClassTable(BaseModel):
    """Classes sorted by id; ``index`` = network output label."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    classes: list[ClassEntry] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> ClassTable:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        for what, values in (("id", ids), ("name", names)):
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"class table: duplicate {what}s {dup}")
        if len(self.classes) > 255:
            raise ValueError(f"class table has {len(self.classes)} classes; at most 255 fit "
                             "the uint8 label outputs")
        if ids != sorted(ids):
            object.__setattr__(self, "classes", sorted(self.classes, key=lambda c: c.id))
        if all(c.ignore for c in self.classes):
            raise ValueError("class table: every class is ignored; nothing would be learned")
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def rgba(self) -> list[tuple[int, int, int, int]]:
        """Display colours (given, else a spread of hues; ignored classes transparent grey)."""
        out = []
        for i, c in enumerate(self.classes):
            if c.color is not None:
                out.append((*c.color[:3], c.color[3] if len(c.color) == 4 else 255))
            elif c.ignore:
                out.append((128, 128, 128, 0))
            else:
                r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95)
                out.append((round(r * 255), round(g * 255), round(b * 255), 255))
        return out

    def ignored(self) -> np.ndarray:
        """bool per output index."""
        return np.array([c.ignore for c in self.classes])

    def map_ids(self, mask: np.ndarray, unlisted: str = "error", where: str = "") -> np.ndarray:
        """Mask of class ids (H, W) -> output indexes uint8, ignored = IGNORE_INDEX.

        Ids not in the table raise ValueError naming them, or become IGNORE_INDEX with
        ``unlisted="ignore"``.
        """
        m = np.asarray(mask)
        if m.dtype.kind == "f":
            finite = np.isfinite(m)
            if not np.all(np.mod(m[finite], 1) == 0):
                raise ValueError(f"{where}mask dtype {m.dtype} holds non-integer values; "
                                 "expected class ids")
            m = np.where(finite, m, -1)
        elif m.dtype.kind not in "uib":
            raise ValueError(f"{where}mask dtype {m.dtype} is not an integer class-id mask")
        m = m.astype(np.int64, copy=False)
        lut = np.full(max(c.id for c in self.classes) + 2, -1, np.int16)
        for i, c in enumerate(self.classes):
            lut[c.id] = IGNORE_INDEX if c.ignore else i
        out = lut[np.clip(m, -1, lut.size - 1)]  # -1 and too-large ids land on the -1 entry
        unknown = out < 0
        if unknown.any():
            if unlisted != "ignore":
                vals = np.unique(m[unknown])[:8].tolist()
                raise ValueError(
                    f"{where}mask holds values {vals} that are not class ids of the table "
                    f"({[c.id for c in self.classes]}); add them to `classes` or set "
                    "`unlisted: ignore`")
            out[unknown] = IGNORE_INDEX
        return out.astype(np.uint8)

    def map_colors(self, rgb: np.ndarray, unlisted: str = "error", where: str = "") -> np.ndarray:
        """RGB-coded mask (3+, H, W) -> output indexes via the classes' colours."""
        if any(c.color is None for c in self.classes):
            missing = [c.name for c in self.classes if c.color is None]
            raise ValueError(f"{where}the mask is RGB-coded but classes {missing} have no "
                             "`color`; give every class its mask colour")
        code = (rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8) | rgb[2]
        keys = np.array([(c.color[0] << 16) | (c.color[1] << 8) | c.color[2]
                         for c in self.classes])
        order = np.argsort(keys)
        pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
        hit = keys[order][pos] == code
        idx = order[pos]
        out = np.where(self.ignored()[idx], IGNORE_INDEX, idx).astype(np.uint8)
        if not hit.all():
            if unlisted != "ignore":
                vals = np.unique(code[~hit])[:5]
                cols = [[int(v >> 16), int((v >> 8) & 255), int(v & 255)] for v in vals]
                raise ValueError(f"{where}mask colours {cols} are not in the class table; add "
                                 "them to `classes` or set `unlisted: ignore`")
            out[~hit] = IGNORE_INDEX
        return out

    def to_checkpoint(self) -> list[dict[str, Any]]:
        """ClassInfo fields (name, RGBA colour, mask id, ignore) in output-label order."""
        return [{"name": c.name, "color": rgba, "id": c.id, "ignore": c.ignore}
                for c, rgba in zip(self.classes, self.rgba(), strict=True)]


def load_class_table(spec: Sequence[Any] | str | Path, base: Path | None = None) -> ClassTable:
    """A table from an inline list of entries, or from a YAML file (path relative to ``base``).

    Inline entries may be dicts or bare names (ids 0, 1, ... in order).
    """
    if isinstance(spec, str | Path):
        path = Path(spec)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read class table {str(path)!r}: {exc}") from exc
        if isinstance(raw, dict) and "classes" in raw:
            raw = raw["classes"]
        spec = raw
    if not isinstance(spec, list):
        raise ValueError(f"class table must be a list of {{id, name, color?, ignore?}}, got "
                         f"{type(spec).__name__}")
    entries = [{"id": i, "name": e} if isinstance(e, str) else e for i, e in enumerate(spec)]
    return ClassTable(classes=[ClassEntry.model_validate(e) for e in entries])
