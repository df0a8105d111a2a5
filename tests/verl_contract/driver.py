"""verl's own config validation over configs hpctl wrote, run inside a venv with that verl installed.

    <venv>/bin/python tests/verl_contract/driver.py CASES.json OUT.json  ->  OUT: {case id: null | "why verl refused"}

verl 0.7: `verl.utils.config.validate_config` with verl's own need_reference_policy/need_critic.
verl 0.5: `RayPPOTrainer._validate_config` (its validation lived on the trainer), on an object that
carries the config and the roles main_ppo would give it (reference policy for a KL loss or KL in the
reward; a critic for GAE). Nothing else of verl runs: no Ray, no models, no GPUs.
"""
from __future__ import annotations

import json
import sys
import types

import verl
from omegaconf import OmegaConf


def validator():
    if verl.__version__.startswith("0.5"):
        from verl.trainer.ppo.ray_trainer import RayPPOTrainer

        def check(cfg):
            roles = types.SimpleNamespace(
                config=cfg, use_critic=cfg.algorithm.adv_estimator == "gae",
                use_reference_policy=bool(cfg.algorithm.use_kl_in_reward or cfg.actor_rollout_ref.actor.use_kl_loss))
            RayPPOTrainer._validate_config(roles)
        return check
    # validate_config asks vLLM's LoRA rank limit through a module that imports vLLM, which these
    # machines lack; verl's own fallback list when vLLM does not say (vllm_rollout/utils.py) stands in.
    stub = types.ModuleType("verl.workers.rollout.vllm_rollout.utils")

    def get_vllm_max_lora_rank(lora_rank: int) -> int:
        ranks = [1, 8, 16, 32, 64, 128, 256, 320, 512]
        if lora_rank > ranks[-1]:
            raise ValueError(f"lora_rank must be less than or equal to {ranks[-1]}, but got {lora_rank}")
        return next(r for r in ranks if r >= lora_rank)
    stub.get_vllm_max_lora_rank = get_vllm_max_lora_rank
    sys.modules[stub.__name__] = stub
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    return lambda cfg: validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def main() -> None:
    cases = json.load(open(sys.argv[1]))
    check = validator()
    out = {}
    for case_id, config in cases.items():
        try:
            check(OmegaConf.create(config))
            out[case_id] = None
        except Exception as e:  # noqa: BLE001 - every refusal counts, whatever verl raises
            out[case_id] = f"{type(e).__name__}: {e}"[:300]
    with open(sys.argv[2], "w") as f:  # not stdout: verl prints there
        json.dump(out, f)


if __name__ == "__main__":
    main()
