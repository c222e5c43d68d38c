"""URL handling and fsspec/s3fs options for archives and outputs.

Supported locations: local paths (relative, ``~`` or absolute), ``file://`` URLs and
``s3://bucket/prefix``. S3 endpoint and credentials come from :class:`S3Options` (the ``s3``
section of the run config) or, field by field when unset there, from the usual AWS
environment variables: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` (else ``AWS_ENDPOINT_URL``) and ``AWS_REGION``
(else ``AWS_DEFAULT_REGION``). With neither, s3fs falls back to botocore's own chain
(``~/.aws``, instance roles).

Credentials never reach a repr, a log line or an error message: :class:`S3Options` keeps them
as ``SecretStr``, :class:`StorageOptions` masks them in its repr, and :func:`redact` scrubs
them from foreign exception texts before we wrap those.

zarr 3 needs the URL plus ``storage_options`` (it builds its own asynchronous s3fs); a
synchronous s3fs inside ``FsspecStore`` fails with "attached to a different loop". So callers
pass ``(url, storage_options)`` pairs around, and :func:`get_fs` is for listing / small reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import fsspec
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from pipeline.errors import ConfigError, StorageError
from pipeline.retries import install as install_retry_counting
from pipeline.retries import s3_client_config

__all__ = [
    "S3Options",
    "StorageOptions",
    "check_output_location",
    "get_fs",
    "identity",
    "is_remote",
    "join_url",
    "listed_root",
    "open_kwargs",
    "redact",
    "resolve_url",
    "storage_options_from",
    "strip_protocol",
]

_SECRET_KEYS = ("key", "secret", "token")
_MASK = "***"


class S3Options(BaseModel):
    """S3 endpoint and credentials (the ``s3`` section of the run config).

    Every field is optional; an unset field falls back to its AWS environment variable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint, e.g. http://127.0.0.1:8333 for a local SeaweedFS/MinIO; "
        "unset: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS itself.",
    )
    key: SecretStr | None = Field(
        default=None, description="Access key id; unset: AWS_ACCESS_KEY_ID."
    )
    secret: SecretStr | None = Field(
        default=None, description="Secret access key; unset: AWS_SECRET_ACCESS_KEY."
    )
    token: SecretStr | None = Field(
        default=None,
        description="Session token for temporary credentials; unset: AWS_SESSION_TOKEN.",
    )
    region: str | None = Field(
        default=None, description="Region name; unset: AWS_REGION, AWS_DEFAULT_REGION."
    )
    anon: bool = Field(
        default=False, description="Anonymous access (public buckets); ignores every credential."
    )

    @model_validator(mode="after")
    def _key_and_secret_together(self) -> S3Options:
        if (self.key is None) != (self.secret is None):
            given, missing = ("key", "secret") if self.key is not None else ("secret", "key")
            raise ValueError(
                f"s3.{given} is set but s3.{missing} is not: give both, or neither to use "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
        if self.endpoint_url is not None:
            scheme = urlsplit(self.endpoint_url).scheme
            if scheme not in ("http", "https"):
                raise ValueError(
                    f"s3.endpoint_url={self.endpoint_url!r} must start with http:// or https://"
                )
        return self


class StorageOptions(dict):
    """fsspec storage options whose repr masks credentials (a plain dict otherwise)."""

    def __repr__(self) -> str:
        return f"StorageOptions({_masked(self)!r})"

    __str__ = __repr__


def _masked(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name in _SECRET_KEYS and value is not None:
            out[name] = _MASK
        elif isinstance(value, Mapping):
            out[name] = _masked(value)
        else:
            out[name] = value
    return out


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def storage_options_from(cfg_s3: S3Options | None = None) -> StorageOptions:
    """s3fs storage options from config, falling back to AWS_* variables field by field.

    The result is what ``s3fs.S3FileSystem(**opts)`` and ``zarr.open(url, storage_options=...)``
    take. Local URLs ignore it. Its repr masks ``key``/``secret``/``token``.
    """
    cfg = cfg_s3 if cfg_s3 is not None else S3Options()
    opts = StorageOptions()
    client_kwargs: dict[str, Any] = {}
    endpoint = cfg.endpoint_url or _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = cfg.region or _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        # Only when asked: a forced us-east-1 makes some S3 servers refuse bucket creation.
        client_kwargs["region_name"] = region
    if cfg.anon:
        opts["anon"] = True
    else:
        key = cfg.key.get_secret_value() if cfg.key is not None else _env("AWS_ACCESS_KEY_ID")
        secret = (
            cfg.secret.get_secret_value()
            if cfg.secret is not None
            else _env("AWS_SECRET_ACCESS_KEY")
        )
        token = (
            cfg.token.get_secret_value() if cfg.token is not None else _env("AWS_SESSION_TOKEN")
        )
        if key and secret:
            opts["key"] = key
            opts["secret"] = secret
        if token:
            opts["token"] = token
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    # botocore's adaptive retries (counted by pipeline.retries); s3fs passes these to the client.
    opts["config_kwargs"] = s3_client_config()
    install_retry_counting()
    return opts


def redact(text: str, storage_options: Mapping[str, Any] | None) -> str:
    """``text`` with every credential value of ``storage_options`` replaced by ``***``."""
    if not storage_options:
        return text
    for name in _SECRET_KEYS:
        value = storage_options.get(name)
        if isinstance(value, str) and value:
            text = text.replace(value, _MASK)
    return text


def resolve_url(url: str | os.PathLike[str]) -> str:
    """Normalize a location: ``s3://bucket/prefix`` (no trailing slash) or an absolute path.

    Raises ConfigError for an empty URL, an unsupported scheme or an S3 URL without bucket.
    """
    text = os.fspath(url).strip()
    if not text:
        raise ConfigError("empty URL: give a local path, file:///abs/path or s3://bucket/prefix")
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"URL {text!r}: file:// URLs need an absolute path (file:///data/archive); "
                f"got host {parts.netloc!r}"
            )
        return os.path.abspath(parts.path)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise ConfigError(f"URL {text!r} has no bucket: use s3://bucket/prefix")
        if parts.query or parts.fragment or "@" in bucket:
            raise ConfigError(
                f"URL s3://{bucket.rpartition('@')[2]}/... must not carry credentials, query or "
                "fragment: put credentials in the s3 config section or AWS_* variables"
            )
        segments = [p for p in parts.path.split("/") if p]
        if any(p in (".", "..") for p in segments):
            # S3 keys are literal ("a/../b" is its own key) while HTTP stacks may collapse dot
            # segments: such a URL could name two places, so it names none.
            raise ConfigError(
                f"URL {text!r} has a '.' or '..' segment: S3 keys are not paths, so write the "
                "prefix out without them (s3://bucket/archive/labels)"
            )
        key = "/".join(segments)
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    raise ConfigError(
        f"URL {text!r}: scheme {scheme!r} is not supported; use a local path, file:// or s3://"
    )


def is_remote(url: str) -> bool:
    """True for object-store URLs (anything resolve_url keeps with a scheme)."""
    return "://" in url


def join_url(base: str, *parts: str) -> str:
    """Join path segments onto a resolved URL or local path with ``/``."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def identity(url: str) -> str:
    """Where ``url`` really is: the real path locally (symlinks and ``..`` resolved, also
    through parts that do not exist yet), the normalised ``s3://bucket/key`` on S3."""
    resolved = resolve_url(url)
    return resolved if is_remote(resolved) else os.path.realpath(resolved)


def check_output_location(input_url: str, output_url: str) -> None:
    """Refuse an output root equal to or inside the input archive (ConfigError).

    Its OME-Zarr stores would be catalogued as scenes by the next run over the archive, and
    the archive itself would be modified. Both locations are compared by :func:`identity`
    (so a symlink or ``..`` into the archive is caught); prefixes compare by whole path
    segments (``s3://b/archive2`` is not inside ``s3://b/archive``).
    """
    src, dst = identity(input_url), identity(output_url)
    if dst == src or dst.startswith(src.rstrip("/") + "/"):
        raise ConfigError(
            f"output {dst} is inside the input archive {src}: its label stores would be read "
            "back as scenes by the next run and the archive would be modified; write to a "
            "location outside the archive (e.g. a sibling folder or another bucket/prefix)"
        )


def strip_protocol(url: str) -> str:
    """The fsspec path of a resolved URL (``bucket/key`` for S3, the path itself locally)."""
    return url.split("://", 1)[1] if is_remote(url) else url


def get_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> fsspec.AbstractFileSystem:
    """A synchronous fsspec filesystem for ``url`` (listing, metadata, small reads).

    For zarr pass the URL and ``storage_options`` to zarr instead (see module docstring).
    """
    resolved = resolve_url(url)
    if not is_remote(resolved):
        return fsspec.filesystem("file")
    try:
        return fsspec.filesystem("s3", **dict(storage_options or {}))
    except Exception as exc:  # bad option names, missing s3fs
        raise StorageError(
            f"cannot create an S3 filesystem for {resolved}: {type(exc).__name__}: "
            f"{redact(str(exc), storage_options)}"
        ) from None


def open_kwargs(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of ``zarr.open_*`` for ``url``: its ``storage_options`` when remote,
    none locally (zarr refuses storage options for a local path)."""
    return {"storage_options": dict(storage_options or {})} if is_remote(url) else {}


def listed_root(url: str, storage_options: Mapping[str, Any] | None
                ) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, fsspec path without a trailing ``/``) of a resolved ``url``, ready to list:
    on S3 the cached listings below it are dropped first (other writers add objects)."""
    fs = get_fs(url, storage_options)
    root = strip_protocol(url).rstrip("/")
    if is_remote(url):
        fs.invalidate_cache(root)
    return fs, root
