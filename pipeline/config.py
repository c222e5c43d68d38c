"""One validated, frozen run configuration, loaded from YAML (file < explicit overrides).

Every field is documented (``hgn-pipeline run --help`` and :func:`describe_fields` show the
descriptions); every default works on a laptop. An unknown or invalid field raises
:class:`~pipeline.errors.ConfigError` naming the field, its value and the fix.

Example ``run.yaml``::

    chunk: 1024          # output chunk side (px)
    halo: 128            # context around each chunk (px)
    bands: [2, 1, 0]     # read BGR scenes as RGB
    nodata: 0            # pixels whose bands are all 0 are no data (label 0, confidence 0)
    value_max: 4095      # 12-bit uint16 data
    confidence: false
    s3: {endpoint_url: http://127.0.0.1:8333}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from pipeline.errors import ConfigError
from pipeline.parsing import load_yaml_mapping
from pipeline.storage import S3Options

__all__ = [
    "OPTIONAL_OUTPUT_SETTINGS", "OUTPUT_SETTINGS", "BandFiles", "RunConfig", "describe_fields",
    "load_config", "output_settings",
]

# The config fields that decide what an output holds (labels, confidence, pyramid): the resume
# ledger's run fingerprint and every scene's resume token are built from exactly these, so a
# resume never mixes outputs of different settings. Batch size, actor counts, retries and the
# like change how fast, not what.
OUTPUT_SETTINGS = (
    "layout", "bands", "value_max", "chunk", "halo", "unit_chunks", "confidence",
    "pyramid_levels",
)
# Output settings that count only when set, so outputs written before these fields existed
# keep their fingerprint and tokens (and resume).
OPTIONAL_OUTPUT_SETTINGS = ("nodata", "band_files")

# Keys whose values must never reach logs, manifests or provenance attributes.
_SECRET_WORDS = ("secret", "token", "password", "key")


def _shipped_checkpoint() -> str:
    # Imported lazily: hgn_model pulls in torch, which a config parse should not need.
    from hgn_model.checkpoint import shipped_checkpoint
    from hgn_model.errors import CheckpointError

    try:
        return str(shipped_checkpoint("hgn"))
    except CheckpointError as e:
        raise ValueError(
            f"no checkpoint given and the shipped one is missing ({e}); set "
            "`checkpoint: PATH.safetensors` in the run config (or --set checkpoint=PATH)"
        ) from None


class BandFiles(BaseModel):
    """Multi-file scenes: one single-band raster per band (see pipeline/io/formats/band_files.py).

    ``pattern`` is matched against archive-relative paths; ``{scene}`` (may contain "/") is
    the scene id, ``{band}`` the band name. ``bands`` lists band names in model order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(
        description='File-name pattern with one {scene} and one {band}, e.g. '
        '"{scene}_B{band}.tif" or "{scene}/B{band}.TIF" (archive-relative).'
    )
    bands: tuple[str, ...] = Field(
        description='Band names in the order the model gets them, e.g. ["04", "03", "02"] '
        "(quoted: they are matched as text)."
    )

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, v: str) -> str:
        for name in ("{scene}", "{band}"):
            if v.count(name) != 1:
                raise ValueError(f"the pattern needs exactly one {name}, e.g. "
                                 '"{scene}_B{band}.tif"')
        rest = v.replace("{scene}", "").replace("{band}", "")
        if "{" in rest or "}" in rest:
            raise ValueError("only {scene} and {band} may appear in braces")
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError("the pattern is relative to the archive root: no leading / or ..")
        return v

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("list at least one band name")
        if len(set(v)) != len(v):
            raise ValueError("a band name is listed twice; list each band once")
        if any(not b or "/" in b for b in v):
            raise ValueError("band names are non-empty and contain no '/'")
        return v


class RunConfig(BaseModel):
    """Settings of one pipeline run. Frozen: derive variants with :meth:`with_overrides`."""

    # allow_inf_nan=False: "inf" or ".nan" is never a meaningful limit, delay or scale.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)

    # --- input -------------------------------------------------------------------------
    layout: Literal["CHW", "HWC"] = Field(
        "CHW",
        description="Axis order of plain zarr scene arrays: 'CHW' (bands first) or 'HWC' "
        "(bands last), any case. OME-Zarr and raster files declare their own. Not given: CHW, "
        "and a 3-D array whose last axis is 1-16 long and first in the hundreds is refused "
        "with the advice layout: hwc.",
    )
    bands: tuple[int, ...] | None = Field(
        None,
        description="Band selection and order, 0-based, e.g. [2, 1, 0] for BGR->RGB or "
        "[0, 1, 2] to drop a 4th band. null: all bands in stored order; the count must match "
        "the checkpoint's in_channels.",
    )
    nodata: float | None = Field(
        None,
        allow_inf_nan=True,  # NaN is a nodata value (the only non-finite float allowed here)
        description="Nodata value for every scene of the archive (overrides the files' own, "
        "e.g. a GeoTIFF nodata tag); .nan for NaN. A pixel is nodata when all its bands equal "
        "it (NaN always counts in float scenes); nodata pixels get label 0 and confidence 0. "
        "null: what each file declares.",
    )
    band_files: BandFiles | None = Field(
        None,
        description='Multi-file scenes, one file per band: {pattern: "{scene}_B{band}.tif", '
        'bands: ["04", "03", "02"]}. Matching files form one scene each, bands in the listed '
        "order, all on one grid. null: every raster file is a scene of its own.",
    )
    value_max: float | dict[str, float] | None = Field(
        None,
        description="The scene value that corresponds to the top of the checkpoint's value "
        "range, e.g. 4095 for 12-bit DN or 10000 for reflectance x 10000: one number for "
        "every scene, or per dtype for mixed archives ({int16: 10000, uint16: 4095}; dtypes "
        "not listed are taken as they are). null: values are taken in the checkpoint's "
        "training units (the run refuses scenes far outside them, naming this fix).",
    )
    # --- plan ----------------------------------------------------------------------------
    chunk: int = Field(
        2048,
        ge=16,
        description="Output chunk side in pixels (zarr chunk of labels level 0). Multiples of "
        "128 keep the model's downsampling phase the same in every window.",
    )
    halo: int = Field(
        256,
        ge=0,
        description="Context pixels read around each chunk on every side and cropped after "
        "inference (reflected at scene edges). ~2x the largest object/context the model needs.",
    )
    unit_chunks: int = Field(
        1,
        ge=1,
        description="Work unit = a block of unit_chunks x unit_chunks output chunks plus halo. "
        "Larger blocks amortise the halo (bigger windows, more memory per window).",
    )
    # --- execution -------------------------------------------------------------------------
    batch_size: int = Field(
        2,
        ge=1,
        description="Windows per actor call; same-shape windows are stacked into one forward "
        "pass. Raise on GPUs, keep small on CPUs (memory grows linearly).",
    )
    max_actors: int | None = Field(
        None,
        ge=1,
        description="Most model actors at once. null: as many as the cluster's nodes hold now "
        "(one per GPU, or CPUs // threads_per_actor), re-read while the run goes, so nodes "
        "that join get actors. A number: the pool keeps that many actors requested; those the "
        "cluster cannot place yet wait as pending actors, which is the demand an autoscaler "
        "scales up for (and they are withdrawn once no work is left).",
    )
    threads_per_actor: int = Field(
        1,
        ge=1,
        description="torch threads per model actor (and of the model of `run --local`); a CPU "
        "actor also requests this many CPUs. At the same setting, --local and Ray outputs "
        "are bit-identical (a different thread count may move a few pixels).",
    )
    use_gpu: Literal["auto"] | bool = Field(
        "auto",
        description="'auto': GPU actors (num_gpus=1 each) when the cluster advertises GPUs at "
        "the start, else CPU actors. true: GPU actors only; the run waits up to "
        "actor_start_timeout_s for GPU capacity (an autoscaler adding GPU nodes), then fails "
        "naming what is missing. false: CPU actors only.",
    )
    cpus_per_gpu_actor: float = Field(
        1.0,
        ge=0,
        description="CPUs each GPU actor requests for reading, padding and writing its windows.",
    )
    max_in_flight_per_actor: int = Field(
        2,
        ge=1,
        description="Batches queued per actor. 2 keeps the next batch read while the model "
        "runs the current one; more only adds memory.",
    )
    overlap_io: bool = Field(
        True,
        description="Inside each actor, read the next batch while the model runs and write "
        "the previous batch on a side thread (bounded queues). false: read, infer, write one "
        "batch at a time (for comparison; the output is the same).",
    )
    read_path: Literal["actor", "dask"] = Field(
        "actor",
        description="How windows are read: 'actor' reads them in the model actor "
        "(SceneReader.read); 'dask' describes each window as a Dask graph of chunk reads and "
        "runs it on Ray (dask-on-ray), which needs free CPUs (see reserve_cpus).",
    )
    reserve_cpus: float | None = Field(
        None,
        ge=0,
        description="Cluster CPUs left free of model actors for Ray read tasks. null: 0 with "
        "read_path 'actor', 1 with 'dask' (dask-on-ray hangs when actors hold every CPU).",
    )
    checkpoint: str = Field(
        None,  # type: ignore[assignment]  # resolved to the shipped checkpoint by a validator
        description="Segmenter checkpoint: the .safetensors file, its .json or the stem. "
        "null/omitted: the checkpoint shipped with hgn_model.",
    )
    # --- output ------------------------------------------------------------------------
    confidence: bool = Field(
        True, description="Also write labels/confidence (max softmax * 255 as uint8)."
    )
    pyramid_levels: int | None = Field(
        None,
        ge=1,
        description="Levels of the label pyramid (2x mode downsampling per level). null: enough "
        "for the coarsest level to fit one chunk, at least 3.",
    )
    keep_previous: int = Field(
        1,
        ge=0,
        description="Label versions kept per re-segmented scene (under <output>/_hgn/previous/) "
        "so nightly runs write a change map against them; 0: keep none (no change maps).",
    )
    overwrite: bool = Field(
        False,
        description="Replace existing outputs of the same scenes. false: a scene whose output "
        "already exists fails with a message, unless the ledger resumes it.",
    )
    s3: S3Options | None = Field(
        None,
        description="S3 endpoint/credentials for s3:// URLs. null: the usual AWS_* environment "
        "variables and config files.",
    )
    # --- fault tolerance -------------------------------------------------------------------
    actor_max_restarts: int = Field(
        2,
        ge=0,
        description="Replacement actors, per pool slot, for model actors that die before their "
        "model is loaded (a crash at start). An actor lost after it started (its node died, "
        "spot preemption, a crash mid-batch) is always replaced when capacity allows.",
    )
    task_max_retries: int = Field(
        2,
        ge=0,
        description="Times a batch goes back to the queue after the actor running it was lost; "
        "a batch lost with more actors than that fails its scene (it may be what kills them).",
    )
    io_retries: int = Field(
        3, ge=0, description="Retries of a failed window read or block write (storage hiccups)."
    )
    io_backoff_s: float = Field(
        0.5,
        ge=0,
        description="First retry delay in seconds; doubles on each retry of the same read/write.",
    )
    connect_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds to wait for the Ray cluster given by --address to answer; then "
        "the run fails naming the address (and releases the output lock).",
    )
    actor_start_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Seconds to wait at the start for the first model actor (and every actor "
        "the cluster has room for) to load its model, before the run fails naming what is "
        "missing (e.g. no GPUs for use_gpu: true).",
    )
    no_actor_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Seconds a run waits with no model actor alive (every node lost, "
        "replacements waiting for capacity) before it stops; what was written is recorded, "
        "so rerunning the same command resumes.",
    )

    @field_validator("layout", mode="before")
    @classmethod
    def _layout_any_case(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v  # `layout: hwc` as well as HWC

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("an empty band list selects nothing; use null for all bands")
        if min(v) < 0:
            raise ValueError("band indices are 0-based and must be >= 0")
        if len(set(v)) != len(v):
            raise ValueError("a band is listed twice; list each band once")
        return v

    @field_validator("value_max")
    @classmethod
    def _check_value_max(cls, v: float | dict[str, float] | None) -> Any:
        from pipeline.scene import SUPPORTED_DTYPES

        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(not (x > 0 and x != float("inf")) for x in values):
            raise ValueError("value_max must be a positive finite number")
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(SUPPORTED_DTYPES))
            if unknown or not v:
                raise ValueError(f"value_max keys {unknown or '{}'} must be dtypes among "
                                 f"{', '.join(SUPPORTED_DTYPES)}")
        return v

    def value_max_for(self, dtype: str) -> float | None:
        """``value_max`` for scenes of ``dtype`` (the per-dtype entry, the number, or None)."""
        if isinstance(self.value_max, dict):
            return self.value_max.get(dtype)
        return self.value_max

    @field_serializer("nodata", when_used="json")
    def _nodata_json(self, v: float | None) -> float | str | None:
        # JSON has no NaN: manifests and tokens carry "nan" (which this field parses back).
        return "nan" if v is not None and v != v else v

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _check_checkpoint(cls, v: Any) -> Any:
        if v is None:
            return _shipped_checkpoint()
        if isinstance(v, str) and not v.strip():
            raise ValueError("the checkpoint path is empty; give a .safetensors path or omit it")
        return str(v) if isinstance(v, Path) else v

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Load a YAML file (an empty file gives the defaults)."""
        return load_config(path)

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A validated copy with some fields replaced."""
        return _validate({**self.model_dump(exclude_unset=True), **overrides}, "overrides")

    def catalog_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pipeline.catalog.catalog` from this config."""
        return {"layout": self.layout, "nodata": self.nodata, "band_files": self.band_files}

    def plan_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pipeline.plan.plan_archive` from this config."""
        return {"chunk": self.chunk, "halo": self.halo, "unit_chunks": self.unit_chunks,
                "bands": self.bands, "confidence": self.confidence}

    @property
    def effective_reserve_cpus(self) -> float:
        if self.reserve_cpus is not None:
            return self.reserve_cpus
        return 1.0 if self.read_path == "dask" else 0.0

    def output_settings(self) -> dict[str, Any]:
        """JSON-ready values of the settings that decide the output (:func:`output_settings`)."""
        return output_settings(self.model_dump(mode="json"))

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready settings with credentials masked, for manifests and provenance."""
        return _mask(self.model_dump(mode="json"))


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: ("***" if v and any(w in k.lower() for w in _SECRET_WORDS) else _mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def output_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """From a config dump: every :data:`OUTPUT_SETTINGS` value, and each
    :data:`OPTIONAL_OUTPUT_SETTINGS` value that is set. The one definition of output identity
    (the ledger's run fingerprint and the scenes' resume tokens both use it)."""
    out = {k: data[k] for k in OUTPUT_SETTINGS}
    out.update({k: data[k] for k in OPTIONAL_OUTPUT_SETTINGS if data.get(k) is not None})
    return out


def describe_fields() -> dict[str, str]:
    """Field name -> description (for help texts and docs)."""
    return {n: f.description or "" for n, f in RunConfig.model_fields.items()}


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults < YAML file at ``path`` < ``overrides``; errors as :class:`ConfigError`."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data.update(load_yaml_mapping(path))  # duplicate keys refused
    if overrides:
        source = f"{source} + overrides" if path is not None else "overrides"
        data.update(overrides)
    return _validate(data, source)


def _validate(data: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, source)) from None


# Nested sections, so an unknown key inside them gets a suggestion from the right field list.
_SECTIONS: dict[str, type[BaseModel]] = {"s3": S3Options, "band_files": BandFiles}


def _explain(err: ValidationError, source: str) -> str:
    lines = [f"invalid run config ({source}):"]
    seen: dict[tuple[str, str], int] = {}
    for item in err.errors():
        # Union branches add their type to loc ("use_gpu.bool"); report the field once.
        path = [str(p) for p in item["loc"] if not (isinstance(p, str) and not p.isidentifier())]
        path = [p for p in path if p not in ("bool", "int", "float", "str")] or ["<root>"]
        loc, value = ".".join(path), _mask(item.get("input"))
        if any(w in path[-1].lower() for w in _SECRET_WORDS):
            value = "***"
        if item["type"] == "extra_forbidden":
            section = _SECTIONS.get(path[0]) if len(path) == 2 else None
            model = section if section is not None else RunConfig
            names = list(model.model_fields)
            close = difflib.get_close_matches(path[-1], names, n=1, cutoff=0.5)
            fix = f"did you mean {close[0]!r}?" if close else "remove it"
            lines.append(f"{loc} = {value!r}: unknown field; {fix} (valid: {', '.join(names)})")
            continue
        key = (loc, repr(value))
        if key in seen:  # another branch of the same union: merge the reasons
            lines[seen[key]] = lines[seen[key]].replace(": ", f": {item['msg']}; or ", 1)
            continue
        field = RunConfig.model_fields.get(path[0])
        hint = f" Expected: {field.description}" if field is not None and field.description else ""
        seen[key] = len(lines)
        lines.append(f"{loc} = {value!r}: {item['msg']}.{hint}")
    # One line (the CLI prints one `error:` line): the source, then each field's problem.
    return f"{lines[0]} " + " | ".join(lines[1:])
