"""Custom entry points: which program a job runs and where its code comes from (the spec's `git`).

The one owner of the `git` section. Every backend asks `entry_point(spec, results_dir)` for
  - the program that torchrun (or hyperpodrun) starts: `-m adapter.train` by default, else
    `git.entry_script` (a Python file) or `-m git.entry_module`; the backend appends
    `--config SPEC` the same way for all three;
  - the clone steps: with `git.repo_url_or_path`, POSIX shell commands that clone the repository
    (at `git.branch` or `git.commit`) into `<results_dir>/code` before the run. Slurm runs them in
    the batch script, Kubernetes in an init container, the local backend before torchrun;
  - `pythonpath`: the clone directory, put first on PYTHONPATH when the program imports from it
    (`entry_module`, `update_adapter`).

`git.update_adapter: true` means "the repository is an hpctl checkout (or fork): run its
`adapter/` instead of the installed one". The clone goes first on PYTHONPATH and the clone steps
check that `adapter/train.py` is there. HyperPod runs `pip install .` for this; hpctl does not,
because on the local backend that would change the environment of every later job, and under a
Slurm container it would run outside the container.

`git.token` reaches the job as HPCTL_SECRET_GIT_TOKEN (adapter.secret.secret_env_name); the clone
reads it through a one-off git credential helper, so it is never written into the plan, the
script or the clone's .git/config. `git.use_default` (HyperPod v2: the launcher's default
adapter repository) has no meaning here: hpctl's default program is its own trainer. HyperPod's
LLMFT module as `git.entry_module` is run by hpctl's trainer in its place (hpctl.standin).

`runs_adapter(spec_data)` tells hpctl's pre-flight checks whether this installation's trainer
runs the recipe; when a custom program does, the trainer's acceptance rules do not apply.
Pure and torch-free; values that cannot work are refused with every problem located at once.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any

from adapter import evalspec
from adapter.secret import secret_env_name
from hpctl import standin
from hpctl.errors import HpctlError, Origin, Problem
from hpctl.spec import Spec

DEFAULT_PROGRAM = ("-m", "adapter.train")
EVALUATION_PROGRAM = ("-m", evalspec.JOB_MODULE)  # an evaluation recipe's job: lm-eval on its model
CODE_DIR = "code"  # the clone, under the results dir
TOKEN_KEY = "git.token"
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
COMMIT = re.compile(r"[0-9a-fA-F]{7,64}\Z")
BRANCH = re.compile(r"[A-Za-z0-9._/+-]+\Z")
# URL characters git needs; nothing a shell or git's own option parser could take for syntax.
URL_CHARS = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+\Z")
URL_FORMS = re.compile(r"((https?|ssh|git|file)://.+|codecommit::.+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:.+|/.*)\Z")
PASSWORD_IN_URL = re.compile(r"://[^/@]*:[^/@]*@")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Clone:
    """Where the code comes from and where it goes."""

    url: str
    branch: str | None
    commit: str | None
    dest: str  # absolute: <results_dir>/code
    token_env: str | None  # the variable carrying git.token, when set
    check_adapter: bool  # update_adapter: the clone must hold adapter/train.py

    def steps(self) -> list[str]:
        """POSIX shell commands, each one line and safely quoted; run in order, stop at the first
        that fails. The destination may be a mount point (Kubernetes' emptyDir), so it is emptied
        rather than replaced."""
        q = shlex.quote
        dest = q(self.dest)
        git = ["git"]
        if self.token_env:  # the helper's `$VAR` is expanded by git's shell at run time, not here
            helper = ("!f() { test \"$1\" = get && echo username=x-access-token && "
                      f"echo \"password=${{{self.token_env}}}\"; }}; f")
            git += ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
        branch = ["--branch", self.branch] if self.branch else []
        clone = [*git, "clone", "--quiet", *branch, "--", self.url, self.dest]
        out = [
            f"mkdir -p -- {dest}",
            f"find {dest} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +",
            shlex.join(clone),
        ]
        if self.commit:
            out.append(f"git -C {dest} checkout --quiet --detach {q(self.commit)}")
        if self.check_adapter:
            missing = q(f"hpctl: git.update_adapter: {self.url} has no adapter/train.py at its root")
            out.append(f"{{ test -f {q(self.dest + '/adapter/train.py')} || {{ echo {missing} >&2; false; }}; }}")
        out.append(f"printf 'hpctl: code from %s at %s\\n' {q(self.url)} \"$(git -C {dest} rev-parse HEAD)\"")
        return out

    def script(self) -> str:
        """The steps as one `&&` chain (a failing step ends it, with or without `set -e`)."""
        return " &&\n".join(self.steps())



@dataclass(frozen=True)
class EntryPoint:
    """What a job runs: the program's arguments (before `--config SPEC`), and the clone it needs."""

    program: tuple[str, ...]
    clone: Clone | None = None
    pythonpath: str | None = None  # prepended to PYTHONPATH when set
    args: tuple[str, ...] | None = None  # git.script_args: the program's own, in place of --config SPEC

    def argv(self, spec_path: str) -> list[str]:
        """The program and its arguments (`--config SPEC`, or git.script_args), after torchrun's own options."""
        return [*self.program, *(self.args if self.args is not None else ("--config", spec_path))]


def _str(git: dict[str, Any], name: str, problems: list[Problem], spec: Spec) -> str | None:
    value = git.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(_problem(spec, name, "expected a string", found=repr(value)))
        return None
    return value


def _problem(spec: Spec, name: str, message: str, **kw: Any) -> Problem:
    key = f"git.{name}"
    return Problem(message, spec.origin(key), key, **kw)


def _check_url(url: str, spec: Spec, problems: list[Problem]) -> None:
    if PASSWORD_IN_URL.search(url):  # first: the other messages show the URL
        origin = spec.origin("git.repo_url_or_path")
        if origin is not None and origin.override is not None:  # the override as typed holds the password
            origin = Origin(override=origin.override)
        problems.append(Problem("a password in the URL would be stored in the plan and state", origin,
                                "git.repo_url_or_path", found="a URL with user:password@",
                                hint="put the token in git.token (sensitive: passed by environment, "
                                     "never written out)"))
    elif not URL_CHARS.match(url) or url.startswith("-"):
        bad = sorted({c for c in url if not URL_CHARS.match(c)}) or ["-"]
        problems.append(_problem(spec, "repo_url_or_path", "not a repository URL or path hpctl can pass to git safely",
                                 found=repr(url), expected="letters, digits and . _ ~ : / @ % + = , - (no spaces "
                                 "or shell characters), not starting with -",
                                 hint="refused characters: " + " ".join(repr(c) for c in bad)))
    elif not URL_FORMS.match(url):
        problems.append(_problem(spec, "repo_url_or_path", "not a repository URL or absolute path", found=repr(url),
                                 expected="https://, http://, ssh://, git://, file://, codecommit::, user@host:path, "
                                          "or an absolute path to a git repository",
                                 hint="a relative path would be relative to a different directory on each backend"))


def _check_branch(branch: str, spec: Spec, problems: list[Problem]) -> None:
    parts = branch.split("/")
    if (not BRANCH.match(branch) or branch.startswith("-") or ".." in branch or branch.endswith((".lock", "."))
            or any(p == "" or p.startswith(".") for p in parts)):
        problems.append(_problem(spec, "branch", "not a branch or tag name hpctl can pass to git safely",
                                 found=repr(branch), expected="letters, digits and . _ / + - as git check-ref-format "
                                 "allows (no '..', no leading '-' or '.', no trailing '/' or '.lock')"))


def _script(script: str, clone_dir: str | None, spec: Spec, problems: list[Problem]) -> str | None:
    if CONTROL.search(script):
        problems.append(_problem(spec, "entry_script", "a script path cannot hold control characters",
                                 found=repr(script)))
        return None
    if not script.endswith(".py"):
        problems.append(_problem(spec, "entry_script", "the entry script must be a Python file", found=repr(script),
                                 expected="a path ending in .py",
                                 hint="for a module use git.entry_module; for a shell script, put it in "
                                      "cluster.setup (Slurm) or the container image"))
        return None
    if clone_dir is None:
        if not script.startswith("/"):
            problems.append(_problem(spec, "entry_script", "a relative entry script needs a repository to be "
                                     "relative to", found=repr(script),
                                     hint="set git.repo_url_or_path, or give the absolute path of the script "
                                          "on the machines that run the job"))
            return None
        return posixpath.normpath(script)
    normal = posixpath.normpath(script)
    if script.startswith("/") or normal == ".." or normal.startswith("../"):
        problems.append(_problem(spec, "entry_script", "with git.repo_url_or_path, the entry script is a path "
                                 "inside the repository", found=repr(script),
                                 expected="a relative path such as train.py or examples/train.py, not leaving it"))
        return None
    return f"{clone_dir}/{normal}"


def entry_point(spec: Spec, results_dir: str | None) -> EntryPoint:
    """The program the job runs and the clone it needs; HpctlError listing every bad `git` value."""
    git = spec.get("git")
    if evalspec.is_evaluation(spec.recipe):  # lm-eval (adapter.evaluate); git.* names trainer programs
        return EntryPoint(EVALUATION_PROGRAM)
    if not isinstance(git, dict) or standin.stands_in(spec.data):
        return EntryPoint(DEFAULT_PROGRAM)
    problems: list[Problem] = []
    names = ("repo_url_or_path", "branch", "commit", "entry_script", "entry_module")
    url, branch, commit, script, module = (_str(git, n, problems, spec) for n in names)
    update_adapter = git.get("update_adapter") is True

    if script and module:
        problems.append(_problem(spec, "entry_module", "git.entry_script and git.entry_module are both set; a job "
                                 "runs one program", found=f"entry_script={script!r}, entry_module={module!r}",
                                 hint="keep one of them"))
    if module and not MODULE.match(module):
        problems.append(_problem(spec, "entry_module", "not a Python module name", found=repr(module),
                                 expected="dotted identifiers, e.g. mypkg.train"))
    if commit and not COMMIT.match(commit):
        problems.append(_problem(spec, "commit", "a commit is a hex sha", found=repr(commit),
                                 expected="7 to 64 hex digits (e.g. the output of `git rev-parse HEAD`)",
                                 hint="for a branch or tag name use git.branch"))
    if branch and commit:
        problems.append(_problem(spec, "branch", "git.branch and git.commit are both set; a commit already pins "
                                 "the code", found=f"branch={branch!r}, commit={commit!r}", hint="keep one of them"))
    if branch:
        _check_branch(branch, spec, problems)
    if url:
        _check_url(url, spec, problems)
    else:
        for name, value in (("branch", branch), ("commit", commit), ("update_adapter", update_adapter or None)):
            if value is not None:
                problems.append(_problem(spec, name, f"git.{name} needs git.repo_url_or_path (the repository to "
                                         "take the code from)", found=repr(value)))
    if url and not (script or module or update_adapter):
        problems.append(_problem(spec, "repo_url_or_path", "the repository would be cloned but nothing runs from it",
                                 found=repr(url), hint="set git.entry_script or git.entry_module to run a program "
                                 "of the clone, or git.update_adapter: true to run the clone's adapter/"))

    clone_dir = None
    if url:
        if not isinstance(results_dir, str) or not results_dir.startswith("/"):
            problems.append(Problem("the repository is cloned into the results dir, which must be an absolute path",
                                    spec.origin("recipes.run.results_dir"), "recipes.run.results_dir",
                                    found=repr(results_dir)))
        elif CONTROL.search(results_dir):
            problems.append(Problem("the results dir cannot hold control characters",
                                    spec.origin("recipes.run.results_dir"), "recipes.run.results_dir",
                                    found=repr(results_dir)))
        else:
            clone_dir = f"{results_dir.rstrip('/')}/{CODE_DIR}"
    in_repo = (clone_dir or f"<results_dir>/{CODE_DIR}") if url else None  # a bad results dir is reported above
    path = _script(script, in_repo, spec, problems) if script else None
    if problems:
        raise HpctlError(problems)

    clone = None
    if url and clone_dir:
        token_env = secret_env_name(TOKEN_KEY) if spec.get(TOKEN_KEY) else None
        clone = Clone(url, branch, commit, clone_dir, token_env, update_adapter)
    program = (path,) if path else ("-m", module) if module else DEFAULT_PROGRAM
    pythonpath = clone_dir if clone and (module or update_adapter) else None
    return EntryPoint(program, clone, pythonpath, _script_args(git, spec, script or module))


def _script_args(git: dict[str, Any], spec: Spec, program: str | None) -> tuple[str, ...] | None:
    """git.script_args (HyperPod custom_script's), checked: strings, and a program to give them to."""
    args = git.get("script_args")
    if args is None:
        return None
    problems = []
    if not program:
        problems.append(_problem(spec, "script_args", "arguments need a program to take them", found=repr(args),
                                 hint="set git.entry_script or git.entry_module; hpctl's trainer takes --config only"))
    elif not isinstance(args, list) or not all(isinstance(a, str) and not CONTROL.search(a) for a in args):
        problems.append(_problem(spec, "script_args", "expected a list of strings without control characters",
                                 found=repr(args)))
    if problems:
        raise HpctlError(problems)
    return tuple(args)


def runs_adapter(spec_data: dict[str, Any]) -> bool:
    """Whether the job runs this installation's trainer (`-m adapter.train`), so its acceptance
    rules apply; False when git sets an entry script or module, or runs a cloned adapter."""
    from hpctl.engines import engine_of  # an engine's recipe runs the engine's program (hpctl.engines)
    if engine_of(spec_data):
        return False
    git = spec_data.get("git") if isinstance(spec_data, dict) else None
    if not isinstance(git, dict) or standin.stands_in(spec_data):
        return True
    return not (git.get("entry_script") or git.get("entry_module") or git.get("update_adapter") is True)


def summary(spec_data: dict[str, Any]) -> str | None:
    """The plan summary's line for a custom program (None for the built-in trainer), from values
    that rendering has already checked with `entry_point`."""
    from hpctl.engines import engine_of
    engine = engine_of(spec_data)
    if engine:
        return engine.program
    if runs_adapter(spec_data):
        return None
    git = spec_data["git"]
    script, module, url = git.get("entry_script"), git.get("entry_module"), git.get("repo_url_or_path")
    program = f"script {script}" if script else f"module {module}" if module else "adapter.train of the clone"
    if not url:
        return program
    pin = f" commit {git['commit']}" if git.get("commit") else f" branch {git['branch']}" if git.get("branch") else ""
    return f"{program} from {url}{pin}"
