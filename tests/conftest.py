"""Shared fixtures: small workspaces written per test, the CLI run in-process, and ../shared.

Tests that need a workspace build their own under tmp_path (`tiny_workspace`), so they do not
depend on the built-in catalog and never write into the repository.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.workspace import DEFAULT_FILES, SHARED, write_files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_workspace(tmp_path: Path) -> Callable[..., Path]:
    """A builder: `tiny_workspace(files={...}, name="ws")` writes the default workspace (general
    config, a local cluster, `recipes/tiny/mini.yaml`) under tmp_path, then `files` on top of it
    (None removes one of the defaults), and returns the workspace root."""
    def build(files: dict[str, str | bytes | None] | None = None, name: str = "ws") -> Path:
        root = tmp_path / name
        root.mkdir()
        write_files(root, {**DEFAULT_FILES, **(files or {})})
        return root
    return build


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `hpctl.cli.main(argv)` in-process: returns (exit code, stdout, stderr)."""
    from hpctl.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        out, err = capsys.readouterr()
        code = exc.value.code
        return (code if isinstance(code, int) else (0 if code is None else 1)), out, err
    return run


@pytest.fixture
def run_hpctl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m hpctl ARGV` as its own process (this checkout's code), with `env` added to
    the environment: for tests that have hpctl kill itself."""
    def run(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
        return subprocess.run([sys.executable, "-m", "hpctl", *map(str, argv)], env=environ,
                              capture_output=True, text=True, timeout=300)
    return run


@pytest.fixture(scope="session")
def hpctl_bin() -> Path:
    """The installed `hpctl` console script of the interpreter running the tests."""
    path = Path(sys.executable).parent / "hpctl"
    if not path.exists():
        pytest.skip(f"no hpctl console script beside {sys.executable} (pip install -e . first)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (public HyperPod recipes used as test input)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED.resolve()} is absent: the tests reading public HyperPod recipes need it")
    return SHARED.resolve()


@pytest.fixture(scope="session")
def hyperpod_v1(shared_dir: Path) -> Path:
    """SageMaker HyperPod v1's launcher tree (config.yaml, cluster/, recipes/)."""
    root = shared_dir / "peer-recipes" / "hyperpod-v1"
    if not (root / "config.yaml").is_file():
        pytest.skip(f"{root} is absent: the HyperPod v1 recipes are needed for this test")
    return root
