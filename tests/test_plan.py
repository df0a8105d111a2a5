"""hpctl plan: byte-identical output, saved plans and their staleness, secrets, formats."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpctl.cli import main

ROOT = Path(__file__).resolve().parents[1]
HPCTL = [sys.executable, "-m", "hpctl"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_plan_is_byte_identical_across_processes_and_directories(tmp_path, fmt):
    ws = tmp_path / "ws"
    ws.mkdir()
    outs = []
    for cwd in (tmp_path, ws):
        for cluster in ("local", "slurm", "k8s"):
            r = subprocess.run([*HPCTL, "plan", "tiny_llama", "--cluster", cluster, "--workspace", str(ws),
                                "--format", fmt, "--no-color", "container=example.com/hpctl:1"], cwd=cwd, capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "237"})
            assert r.returncode == 0, r.stderr
            outs.append(r.stdout)
    assert outs[:3] == outs[3:]
    assert len(set(outs[:3])) == 3  # the three clusters really differ


def test_plan_json_document(tmp_path, capsys):
    rc, out, _ = run(["plan", "tiny_llama", "--cluster", "local", "-w", str(tmp_path), "--json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["format_version"] == 1
    assert doc["job"] == "tiny-llama" and doc["backend"] == "local"
    assert doc["changes"][0]["action"] == "create"
    assert doc["counts"] == {"add": 1, "change": 0, "destroy": 0}
    assert doc["artifact"]["kind"] == "command"
    assert doc["spec"]["recipes"]["run"]["results_dir"] == str(tmp_path.resolve() / "results" / "tiny-llama")
    assert doc["provenance"]["recipes.trainer.max_steps"][0]["file"] == "<builtin>/recipes/tiny/tiny_llama.yaml"
    assert {c["id"] for c in doc["checks"]}
    assert not (tmp_path / ".hpctl").exists()  # plan writes nothing


def test_detailed_exitcode_and_text_footer(tmp_path, capsys):
    rc, out, _ = run(["plan", "tiny_llama", "-c", "local", "-w", str(tmp_path), "--detailed-exitcode"], capsys)
    assert rc == 2
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in out
    assert "+ job tiny-llama: create" in out


def test_markdown_has_fenced_artifact(tmp_path, capsys):
    rc, out, _ = run(["plan", "tiny_llama", "-c", "slurm", "-w", str(tmp_path), "--format", "markdown"], capsys)
    assert rc == 0
    assert "```bash" in out and "#SBATCH" in out and "**Plan: 1 to add" in out


def test_saved_plan_show_and_stale_refusal(tmp_path, capsys, monkeypatch):
    planfile = tmp_path / "p.plan"
    rc, _, _ = run(["plan", "tiny_llama", "-c", "slurm", "-w", str(tmp_path), "--out", str(planfile)], capsys)
    assert rc == 0 and planfile.exists()
    rc, out, _ = run(["show", str(planfile), "-w", str(tmp_path), "--format", "json"], capsys)
    assert rc == 0 and json.loads(out)["job"] == "tiny-llama"
    older = tmp_path / "older.plan"  # saved by an hpctl from before job tags: its summary has no "tag"
    doc = json.loads(planfile.read_text())
    del doc["summary"]["tag"]
    older.write_text(json.dumps(doc))
    rc, out, _ = run(["show", str(older), "-w", str(tmp_path)], capsys)
    assert rc == 0 and "made at the workspace's first apply" in out
    from hpctl.records import JobRecord
    from hpctl.state import locked

    def record(name: str) -> JobRecord:
        return JobRecord(name=name, cluster="slurm", backend="slurm", job_id="77", spec_digest="sha256:x", spec={},
                         artifact={}, results_dir="/r", logs={}, applied_at="2026-12-01T00:00:00Z", status="RUNNING")

    # another job applied meanwhile: state moved on, but this plan's job did not, so it still applies
    # (here it reaches a stand-in sbatch that refuses: the submission was tried, not refused as stale)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: stand-in refuses' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with locked(tmp_path / ".hpctl" / "state.json") as st:
        st.jobs["other-job"] = record("other-job")
        st.save()
    rc, _, err = run(["apply", str(planfile), "-w", str(tmp_path)], capsys)
    assert "the plan is stale" not in err and "stand-in refuses" in err
    # the plan's own job applied meanwhile: refused, naming the job and what changed; nothing submitted
    with locked(tmp_path / ".hpctl" / "state.json") as st:
        st.jobs["tiny-llama"] = record("tiny-llama")
        st.save()
    rc, _, err = run(["apply", str(planfile), "-w", str(tmp_path)], capsys)
    assert rc == 1 and "the plan is stale: job tiny-llama was applied since the plan was made (as 77" in err
    assert "Traceback" not in err


def test_write_artifacts(tmp_path, capsys):
    rc, _, _ = run(["plan", "tiny_llama", "-c", "k8s", "-w", str(tmp_path), "--write-artifacts",
                    str(tmp_path / "art"), "container=example.com/hpctl:1"], capsys)
    assert rc == 0
    text = (tmp_path / "art" / "tiny-llama.yaml").read_text()
    assert "PyTorchJob" in text


def test_secrets_never_printed_or_saved(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value")
    planfile = tmp_path / "p.plan"
    for cluster in ("local", "slurm", "k8s"):
        rc, out, err = run(["plan", "tiny_llama", "-c", cluster, "-w", str(tmp_path), "--json", "--out", str(planfile),
                            "git.token=${oc.env:MY_TOKEN}", "container=example.com/hpctl:1"], capsys)
        assert rc == 0, err
        assert "s3cr3t-value" not in out + err + planfile.read_text()
        doc = json.loads(out)
        assert doc["spec"]["git"]["token"] == "(sensitive)"
        assert doc["artifact"]["env"]  # the job gets it through an environment variable
    rc, out, _ = run(["explain", "tiny_llama", "-c", "local", "-w", str(tmp_path), "git.token=${oc.env:MY_TOKEN}",
                      "git.token"], capsys)
    assert "s3cr3t-value" not in out and "(sensitive)" in out


def test_json_error_document_for_machine_readers(tmp_path, capsys):
    rc, out, err = run(["validate", "tiny_llama", "-c", "local", "-w", str(tmp_path), "trainer.max_step=3", "--json"],
                       capsys)
    assert rc == 1 and "Error:" in err
    doc = json.loads(out)
    problem = doc["problems"][0]
    assert doc["error"] is True and doc["format_version"] == 1
    assert problem["key"] == "recipes.trainer.max_step" and "max_steps" in problem["hint"]
    assert problem["origin"] == {"kind": "override", "index": 1, "text": "trainer.max_step=3"}


@pytest.mark.parametrize("key,sensitive", [
    ("git.token", True), ("recipes.model.hf_access_token", True), ("env_vars.HF_TOKEN", True),
    ("cluster.annotations.example.com/token", True), ("x.aws_secret_access_key", True), ("x.api_key", True),
    ("x.db_password", True), ("x.credentials", True),
    # LLMFT fields that merely contain a sensitive word are not secrets
    ("x.max_new_tokens", False), ("x.add_special_tokens", False), ("x.disable_fast_tokenizer", False),
    ("x.secretary", False),
])
def test_sensitive_keys_are_whole_words(key, sensitive):
    from adapter.secret import is_sensitive
    assert is_sensitive(key) is sensitive
