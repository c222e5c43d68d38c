"""The elastic pool's messages: why no actor started, why the run stopped, why one died.

Each says what happened, what the pool needs, what the cluster has, and the fix, in the
words of the config fields (Ray Data's habit: "0/4 actors started after 60 s: does the
cluster have GPUs for num_gpus=1?").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

from pipeline.errors import PipelineError
from pipeline.execute._slots import Slot
from pipeline.execute.capacity import PoolSpec, Resources, alive_nodes, describe_nodes
from pipeline.execute.protocol import Batch, BatchResult

__all__ = ["failed_result", "loss_reason", "lost_message", "no_start_error", "short"]


def no_start_error(
    spec: PoolSpec,
    use_gpu: Literal["auto"] | bool,
    timeout_s: float,
    target: int,
    init_error: str | None,
    start_failures: int,
    last_loss: str | None,
) -> PipelineError:
    """No actor is live after ``timeout_s`` (or none can be): say what is missing."""
    if init_error is not None:
        return PipelineError(f"a model actor failed to load its model: {init_error}")
    if start_failures:
        return PipelineError(
            f"model actors died {start_failures} time(s) while loading the model "
            f"(last: {last_loss}): the model may not fit in a node's memory; "
            "raise actor_max_restarts if nodes were lost during start-up"
        )
    nodes = alive_nodes()
    why = " (use_gpu: true)" if use_gpu is True else ""
    fallback = ", or set use_gpu: auto to run on CPUs" if use_gpu is True else ""
    no_gpu = spec.uses_gpu and not any(n.get("GPU", 0) for n in nodes)
    return PipelineError(
        f"no model actor started within {timeout_s:g} s (actor_start_timeout_s): each "
        f"needs {spec.need}{why}, and the cluster has {describe_nodes(nodes)}"
        f"{'; no node has a GPU' if no_gpu else ''}. {target} such actor(s) were requested "
        "(an autoscaler sees them as pending demand). Add nodes with those resources, or "
        f"raise actor_start_timeout_s if nodes take longer to come up{fallback}"
    )


def lost_message(
    spec: PoolSpec,
    timeout_s: float,
    lost: int,
    last_loss: str | None,
    pending: int,
    nodes: Sequence[Resources],
) -> str:
    """The run stops: no actor has been alive for ``timeout_s``."""
    return (
        f"no model actor has been alive for {timeout_s:g} s (no_actor_timeout_s): {lost} "
        f"lost in this run (last: {last_loss}); {pending} replacement(s) wait for "
        f"{spec.need} each, which the cluster ({describe_nodes(nodes)}) cannot place. The "
        "run stopped; every chunk written so far is recorded, so rerunning the same command "
        "resumes once capacity is back"
    )


def loss_reason(slot: Slot, error: BaseException) -> str:
    """Why an actor died, in words: preemption, its node, or its own process."""
    if getattr(error, "preempted", False):
        return "its node was preempted"
    node = slot.node
    with contextlib.suppress(Exception):
        import ray

        if any(n["NodeID"] == node and not n.get("Alive") for n in ray.nodes()):
            return "its node died"
    return f"the actor process died ({type(error).__name__})"


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:500]


def failed_result(batch: Batch, error: str) -> BatchResult:
    return BatchResult(
        scene_id=batch.job.scene_id,
        done=(),
        failed_units=tuple(u.unit_id for u in batch.units),
        error=error,
    )
