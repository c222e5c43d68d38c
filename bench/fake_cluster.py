"""A fake multi-node Ray cluster on this machine, to try the elastic pool by hand.

    python bench/fake_cluster.py [--nodes 1] [--join 30,60] [--remove 90] [--gpus 1]

Starts ``ray.cluster_utils.Cluster``: a head with 0 CPUs (like a cluster's driver node) and
``--nodes`` worker nodes of 1 CPU + ``--gpus`` logical GPUs, prints the address, then adds a
node at each ``--join`` second and removes the newest one at each ``--remove`` second (the
way an autoscaler adds nodes and a spot market takes them). In another terminal::

    hgn-pipeline run -i ARCHIVE -o OUT --address ADDRESS --set use_gpu=true --set max_actors=4
    jq '.executor.actors[] | {node_id, units, state}' OUT/_hgn/manifest-*.json

Type ``+`` (add a node), ``-`` (remove the newest) or ``q`` (quit) and Enter at any time;
without a terminal it runs until ``--duration`` or SIGINT/SIGTERM. Ray's token auth stays on;
both processes read the same token. Everything it started stops when it exits.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1, help="worker nodes at the start")
    ap.add_argument("--gpus", type=int, default=1, help="logical GPUs per node (0: CPU nodes)")
    ap.add_argument("--join", default="", help="seconds after start to add a node, e.g. 30,60")
    ap.add_argument("--remove", default="", help="seconds after start to remove the newest node")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = ap.parse_args()

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes: list = []

    def say(what: str, node) -> None:
        print(f"[{time.strftime('%X')}] node {node.node_id[:12]} {what} "
              f"({len(nodes)} worker nodes)", flush=True)

    def add() -> None:  # Ray's Cluster must be driven from the main thread
        nodes.append(cluster.add_node(num_cpus=1, num_gpus=args.gpus))
        say("joined", nodes[-1])

    def remove() -> None:
        if nodes:
            node = nodes.pop()
            cluster.remove_node(node)
            say("removed", node)

    for _ in range(args.nodes):
        add()
    print(f"address: {cluster.address}\n  hgn-pipeline run ... --address {cluster.address}",
          flush=True)
    t0 = time.monotonic()
    plan = sorted([(float(s), "+") for s in args.join.split(",") if s.strip()]
                  + [(float(s), "-") for s in args.remove.split(",") if s.strip()])
    commands: queue.Queue[str] = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            commands.put(line.strip())

    threading.Thread(target=read_stdin, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: commands.put("q"))
    try:
        while True:
            now = time.monotonic() - t0
            if args.duration is not None and now >= args.duration:
                break
            wait = min([at - now for at, _ in plan[:1]] + [1.0])
            try:
                cmd = commands.get(timeout=max(wait, 0.0))
            except queue.Empty:
                cmd = plan.pop(0)[1] if plan and plan[0][0] <= time.monotonic() - t0 else ""
            if cmd == "q":
                break
            {"+": add, "-": remove}.get(cmd, lambda: None)()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
