"""`python -m adapter.lighthouse --port P --min-replicas M --heartbeat-timeout-ms T`: torchft's lighthouse for one job.

The lighthouse tracks which replica groups are alive and forms each step's quorum
(trainer.fault_tolerance, ft_config.py). hpctl's launchers start it beside the groups (a
background process locally, its own srun step on Slurm) and stop it with SIGTERM once every
group has ended. torchft's own `torchft_lighthouse` script parses the process's argv, so it
cannot run as `python -m`; this wrapper runs the same server from the interpreter the job uses.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

# How long the lighthouse waits for heartbeating stragglers before forming a quorum without them:
# short, so the live groups never wait long for one that is restarting (it joins the next step).
JOIN_TIMEOUT_MS = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapter.lighthouse", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=5000,
                        help="a group silent this long is no longer counted live (trainer.fault_tolerance.heartbeat_timeout_s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RUST_LOG", "warn")  # its INFO log has a line for every quorum tick
    from torchft._torchft import LighthouseServer
    server = LighthouseServer(bind=f"[::]:{args.port}", min_replicas=args.min_replicas, join_timeout_ms=JOIN_TIMEOUT_MS,
                              heartbeat_timeout_ms=args.heartbeat_timeout_ms)
    print(f"adapter: [fault tolerance] lighthouse listening at {server.address()}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
