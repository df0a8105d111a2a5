"""Stands in for verl's entry point in the real-Ray tests (verl itself needs GPUs and vLLM).

Started exactly as verl's `python -u -m verl.trainer.main_ppo --config-path DIR --config-name NAME`
is (the spec's git.entry_module names this module), it reads the config file verl would read, joins
the Ray cluster the launch started (RAY_ADDRESS), runs one task on every node and prints one line:
`HPCTL_PROBE {"nodes": ..., "ran_on": [...], "config": {...}}`.
"""
from __future__ import annotations

import argparse
import json
import os
import socket

import ray
import yaml
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-path", required=True)
    parser.add_argument("--config-name", required=True)
    args = parser.parse_args()
    with open(os.path.join(args.config_path, f"{args.config_name}.yaml")) as f:
        config = yaml.safe_load(f)
    ray.init(logging_level="ERROR")
    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    ran_on = ray.get([where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
                      for node in alive])
    print("HPCTL_PROBE " + json.dumps({"nodes": len(alive), "ran_on": sorted(ran_on) == sorted(alive),
                                       "address": os.environ.get("RAY_ADDRESS"), "host": socket.gethostname(),
                                       "config": config}), flush=True)


if __name__ == "__main__":
    main()
