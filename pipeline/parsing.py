"""Parsing what users type: strict YAML and ``--set`` overrides, each error one line.

Every config or command-line parse error reaches the user as exactly one line,
``error: <what> <value>: <why>; <fix>`` (exit code 2, never a traceback):

- :func:`yaml_value` / :func:`load_yaml_mapping` parse with PyYAML's safe loader and refuse
  duplicate mapping keys (YAML says keys are unique; PyYAML silently keeps the last one);
- :func:`parse_overrides` turns ``--set FIELD=VALUE`` items into a dict, naming the item and
  the fix when one is not ``FIELD=VALUE`` or its value is not YAML;
- :func:`check_num_cpus` refuses a Ray with no CPU before anything starts;
- :func:`one_line` flattens a multi-line message.

Click's own usage errors are turned into one line by :class:`pipeline.cli._usage.OneLineErrors`.
No click or typer here: the run config imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

__all__ = ["check_num_cpus", "load_yaml_mapping", "one_line", "parse_overrides", "yaml_value"]


def _check_unique(node: yaml.Node, path: list[str]) -> None:
    """Refuse a key given twice in any mapping of the composed document (path in the message)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(getattr(key_node, "value", key_node))
            line = key_node.start_mark.line + 1
            if key in seen:
                name = ".".join([*path, key])
                raise ConfigError(
                    f"duplicate key {name!r} on line {line} (first on line {seen[key]}): YAML "
                    "keys are unique and only one value can win; keep one of them"
                )
            seen[key] = line
            _check_unique(value_node, [*path, key])
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique(item, path)


def yaml_value(text: str, what: str) -> Any:
    """Parse ``text`` as YAML (safe types only, duplicate keys refused); errors name ``what``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_unique(node, [])
        return yaml.safe_load(text)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file ``path`` ({} when empty); ConfigError for anything else."""
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {source!r} does not exist; pass an existing YAML file")
    loaded = yaml_value(p.read_text(), f"config file {source!r}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {source!r} holds a {type(loaded).__name__}; it must be a mapping "
            "of field: value (see `hgn-pipeline run --help`)"
        )
    return loaded


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["chunk=1024", "bands=[2,1,0]"]`` -> ``{"chunk": 1024, "bands": [2, 1, 0]}`` (YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set {item!r} is not FIELD=VALUE: write e.g. --set chunk=1024 "
                "(fields: see `hgn-pipeline run --help`)"
            )
        key = key.strip()  # given twice: the last one wins, as for any repeated option
        try:
            out[key] = yaml_value(value, f"--set {item}") if value.strip() else None
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; quote the value or fix its brackets, e.g. --set {key}=1024 or "
                f"--set '{key}=[0, 1, 2]'"
            ) from None
    return out


def check_num_cpus(num_cpus: int | None) -> None:
    """Refuse ``--num-cpus`` below 1: a Ray without CPUs places no actor and waits forever."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(
            f"--num-cpus {num_cpus}: a private Ray with no CPU can place no model actor and "
            "would wait forever; give 1 or more, or omit it to use every core"
        )


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (multi-line library messages joined with ' | ')."""
    text = " | ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__
