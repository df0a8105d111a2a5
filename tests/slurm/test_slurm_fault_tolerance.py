"""trainer.fault_tolerance on the two-node test Slurm (tests/slurm/cluster.sh), through the CLI:
the lighthouse is its own srun step, each replica group an srun step with --kill-on-bad-exit=0 in
its own restart loop. SIGKILL of group 1's trainer mid-run: group 0's step carries on in the same
process, group 1's step is started again alone, heals from group 0 and from then on holds bitwise
the same parameters after every commit; the job ends SUCCEEDED."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import ft as ft_checks
from tests.helpers.slurm import Workspace

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STEPS = 400


def test_sigkill_of_one_group_on_slurm(tmp_path: Path, slurm_cluster: None) -> None:
    ws = Workspace(tmp_path)
    ws.apply("ft", ["tiny_llama", "--cluster", "slurm", "run.name=ft", "trainer.accelerator=cpu",
                    "trainer.num_nodes=2", "trainer.devices=1", "model.shard_degree=1",
                    f"cluster.python={sys.executable}", "cluster.exclusive=false", "cluster.mem=null",
                    f"cluster.workdir={REPO}", f"trainer.max_steps={STEPS}",
                    "+trainer.fault_tolerance.enabled=true", "+trainer.fault_tolerance.replica_groups=2",
                    "+trainer.fault_tolerance.lighthouse_port=24701", "+cluster.env.HPCTL_FT_PARAM_DIGEST=1",
                    # dropped by the lighthouse well before its restart (srun, torchrun, imports) is back,
                    # so the survivor trains alone for a while
                    "+trainer.fault_tolerance.heartbeat_timeout_s=2"])
    results = ws.results("ft")
    ft_checks.wait_for_step(results, 1, 10)
    ft_checks.sigkill_group(1)
    job = ws.wait("ft", timeout_s=600)
    text = ws.log("ft")
    assert (job["state"], job["exit_code"]) == ("SUCCEEDED", 0), text[-3000:]
    assert "replica group 1 exited with code" in text and "restarting it alone (1 of 3)" in text
    got = ft_checks.assert_recovered(results, groups=2, ranks=1, max_steps=STEPS, killed=1)
    assert got["degraded_steps"]
    assert "=== recovery: replica group 1 rejoined at step" in ws.hpctl("logs", "ft").stdout
