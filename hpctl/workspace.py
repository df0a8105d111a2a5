"""Find the three layers: the general config, a cluster config and a recipe.

A workspace is a directory with `config.yaml`, `clusters/NAME.yaml` (or HyperPod's
`cluster/NAME.yaml`) and `recipes/**/NAME.yaml`. What the workspace lacks falls back to the
built-in copies shipped with hpctl. Files are named in messages relative to their workspace
(`recipes/tiny/tiny_llama.yaml`) or as `<builtin>/...`, never relative to the current directory,
so a plan reads the same from anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpctl.errors import HpctlError
from hpctl.resources import builtin_root
from hpctl.suggest import did_you_mean

BUILTIN = "<builtin>"


@dataclass(frozen=True)
class Found:
    """A located input file and the name it is shown under."""

    path: Path
    display: str
    name: str  # the recipe or cluster name (recipe: path under recipes/ without .yaml)


class Workspace:
    def __init__(self, root: Path | None = None):
        self.root = (root or Path.cwd()).resolve()
        if not self.root.is_dir():
            raise HpctlError(f"workspace '{root}' is not a directory", key="--workspace")
        self.builtin = builtin_root()

    @property
    def state_dir(self) -> Path:
        return self.root / ".hpctl"

    def _roots(self) -> list[tuple[Path, str]]:
        roots = [(self.root, "")]
        if self.builtin.resolve() != self.root:
            roots.append((self.builtin, BUILTIN + "/"))
        return roots

    def general_config(self) -> Found:
        for root, prefix in self._roots():
            if (root / "config.yaml").is_file():
                return Found(root / "config.yaml", prefix + "config.yaml", "config")
        raise HpctlError("no general config found", hint="create config.yaml in the workspace")

    def clusters(self) -> dict[str, Found]:
        """Every known cluster by name; the workspace's shadow the built-ins."""
        out: dict[str, Found] = {}
        for root, prefix in reversed(self._roots()):
            for sub in ("cluster", "clusters"):
                for p in sorted((root / sub).glob("*.yaml")):
                    out[p.stem] = Found(p, f"{prefix}{sub}/{p.name}", p.stem)
        return out

    def cluster(self, name: str) -> Found:
        known = self.clusters()
        if name in known:
            return known[name]
        path = Path(name)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return Found(path.resolve(), str(path), path.stem)
        raise HpctlError(f"unknown cluster '{name}'", key="cluster", expected=", ".join(sorted(known)),
                         hint=did_you_mean(name, known))

    def recipes(self) -> dict[str, Found]:
        """Every recipe by its path under recipes/ without `.yaml` (`tiny/tiny_llama`)."""
        out: dict[str, Found] = {}
        for root, prefix in reversed(self._roots()):
            base = root / "recipes"
            for p in sorted(base.rglob("*.yaml")):
                rel = p.relative_to(base).with_suffix("").as_posix()
                out[rel] = Found(p, f"{prefix}recipes/{rel}.yaml", rel)
        return out

    def recipe(self, name: str) -> Found:
        """A recipe by path under recipes/, by unique basename, or by a file path."""
        name = name.removeprefix("recipes/")
        stem = name[:-5] if name.endswith(".yaml") else name
        known = self.recipes()
        if stem in known:
            return known[stem]
        by_base = [f for rel, f in known.items() if rel.rsplit("/", 1)[-1] == stem]
        if len(by_base) == 1:
            return by_base[0]
        if len(by_base) > 1:
            raise HpctlError(f"recipe name '{name}' is ambiguous", key="recipe",
                             expected="one of: " + ", ".join(f.name for f in by_base))
        path = Path(name)
        if path.is_file():
            return Found(path.resolve(), str(path), path.stem)
        candidates = list(known) + [rel.rsplit("/", 1)[-1] for rel in known]
        raise HpctlError(f"unknown recipe '{name}'", key="recipe",
                         hint=did_you_mean(stem, candidates) or "run `hpctl recipes list` to see the recipes")
