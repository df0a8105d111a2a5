"""Plan actions: create, update, replace, destroy and no change, with per-key old -> new."""
from __future__ import annotations

from hpctl.backends.base import JobRecord
from hpctl.diff import CREATE, DESTROY, NOOP, REPLACE, UPDATE, diff

SPEC = {"cluster_type": "local", "recipes": {"run": {"name": "j", "results_dir": "/r/j"},
                                             "trainer": {"max_steps": 10}}}


def _record(status: str, spec=SPEC, text="ART") -> JobRecord:
    return JobRecord(name="j", cluster="local", backend="local", job_id="1", spec_digest="", spec=spec,
                     artifact={"text": text}, results_dir="/r/j", logs={}, applied_at="", status=status)


def _with(path: str, value) -> dict:
    import copy
    spec = copy.deepcopy(SPEC)
    node = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return spec


def test_create_when_not_in_state():
    assert diff("j", SPEC, "ART", None).action == CREATE


def test_no_change_when_spec_and_artifact_match():
    assert diff("j", SPEC, "ART", _record("SUCCEEDED")).action == NOOP


def test_update_of_a_finished_job_lists_old_and_new():
    ch = diff("j", _with("recipes.trainer.max_steps", 20), "ART2", _record("SUCCEEDED"))
    assert ch.action == UPDATE
    assert [(k.path, k.old, k.new) for k in ch.keys] == [("recipes.trainer.max_steps", 10, 20)]
    assert ch.artifact_changed


def test_running_job_is_replaced():
    ch = diff("j", _with("recipes.trainer.max_steps", 20), "ART", _record("RUNNING"))
    assert ch.action == REPLACE and "RUNNING" in ch.reason


def test_results_dir_change_forces_replace_even_when_finished():
    ch = diff("j", _with("recipes.run.results_dir", "/other"), "ART", _record("FAILED"))
    assert ch.action == REPLACE
    assert ch.keys[0].forces_replace


def test_added_and_removed_keys():
    spec = _with("recipes.trainer.extra", 1)
    del spec["recipes"]["trainer"]["max_steps"]
    ch = diff("j", spec, "ART", _record("SUCCEEDED"))
    assert {(k.path, k.old, k.new) for k in ch.keys} == {
        ("recipes.trainer.extra", "(absent)", 1), ("recipes.trainer.max_steps", 10, "(absent)")}


def test_destroy():
    assert diff("j", SPEC, "", _record("RUNNING"), destroy=True).action == DESTROY
    assert diff("j", SPEC, "", None, destroy=True).action == NOOP
