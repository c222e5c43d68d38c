"""A fake multi-node Ray cluster on this machine, to try the elastic pool by hand.

    python bench/fake_cluster.py [--nodes 1] [--join 30,60] [--remove 90] [--gpus 1]

Starts ``ray.cluster_utils.Cluster``: a head with 0 CPUs (like a cluster's driver node) and
``--nodes`` worker nodes of 1 CPU + ``--gpus`` logical GPUs, prints the address, then adds a
node at each ``--join`` second and removes the newest one at each ``--remove`` second (the
way an autoscaler adds nodes and a spot market takes them). In another terminal::

    hgn-pipeline run -i ARCHIVE -o OUT --address ADDRESS --set use_gpu=true --set max_actors=4
    jq '.executor.actors[] | {node_id, units, state}' OUT/_hgn/manifest-*.json

Type ``+`` (add a node), ``-`` (remove the newest) or ``q`` (quit) and Enter at any time.
Ray's token auth stays on; both processes read the same token. Stops everything on exit.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1, help="worker nodes at the start")
    ap.add_argument("--gpus", type=int, default=1, help="logical GPUs per node (0: CPU nodes)")
    ap.add_argument("--join", default="", help="seconds after start to add a node, e.g. 30,60")
    ap.add_argument("--remove", default="", help="seconds after start to remove the newest node")
    ap.add_argument("--duration", type=float, default=None,
                    help="without a terminal (stdin closed): stop after this many seconds")
    args = ap.parse_args()

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = []
    lock = threading.Lock()

    def add() -> None:
        with lock:
            nodes.append(cluster.add_node(num_cpus=1, num_gpus=args.gpus))
            print(f"[{time.strftime('%X')}] node {nodes[-1].node_id[:12]} joined "
                  f"({len(nodes)} worker nodes)", flush=True)

    def remove() -> None:
        with lock:
            if nodes:
                node = nodes.pop()
                cluster.remove_node(node)
                print(f"[{time.strftime('%X')}] node {node.node_id[:12]} removed "
                      f"({len(nodes)} worker nodes)", flush=True)

    for _ in range(args.nodes):
        add()
    print(f"address: {cluster.address}\n  hgn-pipeline run ... --address {cluster.address}",
          flush=True)
    t0 = time.monotonic()
    plan = sorted([(float(s), add) for s in args.join.split(",") if s.strip()]
                  + [(float(s), remove) for s in args.remove.split(",") if s.strip()],
                  key=lambda p: p[0])

    def scheduled() -> None:
        for at, action in plan:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            action()

    threading.Thread(target=scheduled, daemon=True).start()
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "+":
                add()
            elif cmd == "-":
                remove()
            elif cmd == "q":
                break
        else:  # stdin closed (a script, nohup): run until --duration or Ctrl-C
            threading.Event().wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
