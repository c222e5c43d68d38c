"""What one model actor asks of Ray, and how many the cluster's nodes hold.

Pure: works on plain resource dicts (``ray.nodes()[i]["Resources"]``), so the sizing rules
are tested without a cluster. :func:`alive_nodes` is the only function that asks Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.errors import ConfigError

__all__ = ["PoolSpec", "alive_nodes", "describe_nodes", "pool_spec"]

Resources = Mapping[str, float]


@dataclass(frozen=True)
class PoolSpec:
    """The shape of every actor of a pool and how many the pool may hold."""

    num_cpus: float  # CPUs each actor requests
    num_gpus: float  # GPUs each actor requests (0 or 1)
    threads: int  # torch threads per actor
    max_actors: int | None = None  # None: as many as the nodes hold (at least 1)
    reserve_cpus: float = 0.0  # cluster CPUs left free of actors (CPU actors only)

    @property
    def uses_gpu(self) -> bool:
        return self.num_gpus > 0

    @property
    def need(self) -> str:
        """What one actor needs, in words ("1 GPU + 1 CPU")."""
        if self.uses_gpu:
            return f"{self.num_gpus:g} GPU + {self.num_cpus:g} CPU"
        return f"{self.num_cpus:g} CPU"

    def fit(self, nodes: Sequence[Resources]) -> int:
        """Actors of this shape the nodes' total resources hold (packed per node)."""
        n = sum(self._per_node(r) for r in nodes)
        if not self.uses_gpu and self.reserve_cpus and self.num_cpus > 0:
            total = sum(float(r.get("CPU", 0)) for r in nodes)
            n = min(n, int((total - self.reserve_cpus) // self.num_cpus))
        return max(n, 0)

    def _per_node(self, r: Resources) -> int:
        cpu_fit = math.inf if self.num_cpus <= 0 else float(r.get("CPU", 0)) // self.num_cpus
        if self.uses_gpu:
            return int(min(float(r.get("GPU", 0)) // self.num_gpus, cpu_fit))
        return 0 if math.isinf(cpu_fit) else int(cpu_fit)

    def target(self, nodes: Sequence[Resources]) -> int:
        """Actors the pool wants now: ``max_actors``, else what the nodes hold (>= 1).

        With ``max_actors`` the actors the nodes cannot hold yet stay pending: that is the
        demand an autoscaler sees. Without, the target follows the nodes as they come and go.
        """
        if self.max_actors is not None:
            return self.max_actors
        return max(1, self.fit(nodes))


def pool_spec(
    nodes: Resources | Sequence[Resources],
    *,
    max_actors: int | None = None,
    threads: int = 1,
    use_gpu: Literal["auto"] | bool = "auto",
    cpus_per_gpu_actor: float = 1.0,
    reserve_cpus: float = 0.0,
    read_path: str = "actor",
) -> PoolSpec:
    """The pool's actor shape from the nodes' resources (or one totals dict) and the config.

    GPU actors (``num_gpus=1``) when ``use_gpu`` is true, or "auto" and some node has a GPU;
    ``use_gpu: true`` with no GPU yet is fine here: the pool waits for GPU capacity. CPU
    actors request ``threads`` CPUs. With ``read_path="dask"`` reads run as Ray tasks, which
    need a CPU the actors do not hold, or dask-on-ray waits forever: refused up front.
    """
    nodes = [nodes] if isinstance(nodes, Mapping) else list(nodes)
    gpus = sum(float(r.get("GPU", 0)) for r in nodes)
    cpus = sum(float(r.get("CPU", 0)) for r in nodes)
    if use_gpu is True or (use_gpu == "auto" and gpus >= 1):
        spec = PoolSpec(cpus_per_gpu_actor, 1.0, threads, max_actors)
    else:
        spec = PoolSpec(float(threads), 0.0, threads, max_actors, reserve_cpus)
    if read_path == "dask":
        held = spec.num_cpus * min(spec.target(nodes), max(spec.fit(nodes), 1))
        if cpus - held < 1:
            raise ConfigError(
                f"read_path: dask runs window reads as Ray tasks needing a free CPU, but "
                f"{spec.target(nodes)} actors x {spec.num_cpus:g} CPUs hold all {cpus:g} "
                "cluster CPUs (dask-on-ray would hang): set reserve_cpus: 1, or lower "
                "max_actors / threads_per_actor"
            )
    return spec


def alive_nodes() -> list[dict[str, float]]:
    """Total resources of every alive node of the connected Ray cluster."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def describe_nodes(nodes: Sequence[Resources]) -> str:
    """'3 alive nodes with CPU 2, GPU 0 in total' (for error messages)."""
    cpus = sum(float(r.get("CPU", 0)) for r in nodes)
    gpus = sum(float(r.get("GPU", 0)) for r in nodes)
    word = "node" if len(nodes) == 1 else "nodes"
    return f"{len(nodes)} alive {word} with CPU {cpus:g}, GPU {gpus:g} in total"
