"""What the evaluation tests share: a tokenizer for the tiny model, the CLI as a process, waiting
for jobs, and lm-eval run directly (the reference the jobs' scores must equal)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers.trainer import WORDS

REPO = Path(__file__).resolve().parents[2]
TASKS = Path(__file__).resolve().parent / "tasks"


def word_tokenizer(out: Path) -> Path:
    """A word-level tokenizer over WORDS (the tasks' vocabulary) that decodes back to words, saved
    as a transformers tokenizer directory: training with it copies it into the export."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(out)
    return out


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def hpctl(ws: Path, *argv: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "hpctl", *map(str, argv), "-w", str(ws)], env=env(), cwd=ws,
                          capture_output=True, text=True, timeout=600)
    assert not check or proc.returncode == 0, f"hpctl {argv}: {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr}"
    return proc


def wait(ws: Path, *jobs: str, timeout: float = 600) -> dict[str, dict[str, Any]]:
    """`hpctl status --json` of `jobs` once every one has ended."""
    deadline = time.monotonic() + timeout
    while True:
        doc = json.loads(hpctl(ws, "status", "--json").stdout)
        found = {j["name"]: j for j in doc["jobs"] if j["name"] in jobs}
        if all(found.get(j, {}).get("state") in ("SUCCEEDED", "FAILED", "CANCELLED") for j in jobs):
            return found
        assert time.monotonic() < deadline, f"jobs still running after {timeout}s: {found}"
        time.sleep(2)


def lm_eval_directly(model: Path, out: Path, tasks: str = "tiny_choice,tiny_gen") -> dict[str, Any]:
    """lm-eval's own CLI on the same model and tasks, from the task directory; its results JSON."""
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                           f"pretrained={model}", "--tasks", tasks, "--include_path", str(TASKS), "--device", "cpu",
                           "--output_path", str(out), "--log_samples"], cwd=TASKS, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(out.rglob("results_*.json")).read_text())
