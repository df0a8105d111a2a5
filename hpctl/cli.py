"""The `hpctl` command line: thin wiring from arguments to the pipeline and the backends.

Every command takes --workspace, --no-color and --debug; those that print data take --json.
Errors print as one located message and exit 1; only --debug shows a traceback.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import cached_property, wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from hpctl.errors import HpctlError
from hpctl.workspace import Workspace

if TYPE_CHECKING:
    from rich.console import Console

FORMAT_VERSION = 1


@dataclass
class Env:
    """What every command gets. The consoles are made on first use: rich is imported only by
    commands that print for people (`--json` output and plain errors never load it)."""

    workspace: Workspace
    no_color: bool
    state_path: Path
    lock_timeout: float

    @cached_property
    def out(self) -> "Console":
        return _console(self.no_color)

    @cached_property
    def err(self) -> "Console":
        return _console(self.no_color, stderr=True)

    def state(self):
        from hpctl.state import State
        return State.load(self.state_path)

    def locked(self):
        from hpctl.state import locked
        return locked(self.state_path, self.lock_timeout)


def _console(no_color: bool, stderr: bool = False) -> "Console":
    from rich.console import Console
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, no_color=no_color or not tty, highlight=False, soft_wrap=not tty,
                   width=None if tty else 100, color_system="auto" if (tty and not no_color) else None)


def common(fn: Callable) -> Callable:
    """--workspace, --state, --lock-timeout, --no-color and --debug on every command."""
    @click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Workspace directory (default: the current directory).")
    @click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="State file (default: WORKSPACE/.hpctl/state.json).")
    @click.option("--lock-timeout", type=float, default=10.0, show_default=True,
                  help="Seconds to wait for the state lock.")
    @click.option("--no-color", is_flag=True, help="Plain output.")
    @click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
    @wraps(fn)
    def wrapper(workspace, state_path, lock_timeout, no_color, debug, **kw):
        ws = Workspace(workspace)
        env = Env(ws, no_color, state_path or ws.state_dir / "state.json", lock_timeout)
        return fn(env, **kw)
    return wrapper


def _print_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps({"format_version": FORMAT_VERSION, **doc}, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpctl")
def cli() -> None:
    """Plan, apply and follow LLM training jobs on local, Slurm and Kubernetes clusters, and as SageMaker
    training jobs."""


recipe_args = click.argument("args", nargs=-1)
cluster_opt = click.option("--cluster", "-c", default=None, help="Cluster config name (clusters/NAME.yaml).")


def _compose(env: Env, args: tuple[str, ...], cluster: str | None):
    from hpctl.compose import compose
    return compose(list(args), cluster, env.workspace)


@cli.command()
@recipe_args
@cluster_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common
def validate(env: Env, args, cluster, as_json) -> int:
    """Everything plan checks for RECIPE [key=value ...] (schema, pre-flight, the trainer's config,
    rendering), without state or a diff; exit 0 when valid."""
    from dataclasses import asdict

    from hpctl.checks import memory_estimate
    from hpctl.plan import verify
    spec = _compose(env, args, cluster)
    results, _ = verify(spec)
    est = memory_estimate(spec)
    if as_json:
        _print_json({"valid": True, "job": spec.job_name, "recipe": spec.recipe_name,
                     "checks": [asdict(c) for c in results], "memory": asdict(est),
                     "spec": spec.public_data(), "provenance": spec.provenance_json()})
        return 0
    from rich.markup import escape
    for c in results:
        color = {"warning": "yellow", "info": "dim"}.get(c.severity, "red")
        env.out.print(f"[{color}]{c.severity}[/{color}] {escape(f'[{c.id}] {c.message}')}")
    env.out.print(f"[green]valid[/green]: {spec.recipe_name} on {spec.cluster_name} "
                  f"(memory estimate {est.total_gb:.2f} GB per device)")
    return 0


@cli.command()
@click.argument("args", nargs=-1, required=True)
@cluster_opt
@click.option("--json", "as_json", is_flag=True)
@common
def explain(env: Env, args, cluster, as_json) -> int:
    """Print the final value of KEY.PATH and where it came from: RECIPE [key=value ...] KEY.PATH"""
    from adapter.keypath import get_path
    from adapter.secret import redact_at
    from hpctl.compose import split_args
    from hpctl.suggest import did_you_mean
    *rest, key = args
    spec = _compose(env, tuple(rest), cluster)
    _, _, _, hyperpod = split_args(rest)
    candidates = [key] if hyperpod or key.split(".")[0] in spec.data else [key, "recipes." + key]
    path = next((p for p in candidates if get_path(spec.data, p, KeyError) is not KeyError), None)
    if path is None:
        parent = candidates[-1].rpartition(".")[0]
        here = get_path(spec.data, parent, {}) if parent else spec.data
        raise HpctlError(f"key '{key}' is not in the spec", key=key,
                         hint=did_you_mean(key.rpartition(".")[2], here if isinstance(here, dict) else []))
    value = get_path(spec.data, path)
    shown = redact_at(path, value, spec.secret_paths)
    chain = spec.provenance.get(path) or ([spec.origin(path)] if spec.origin(path) else [])
    if as_json:
        _print_json({"key": path, "value": shown, "origins": [o.to_json() for o in chain]})
        return 0
    env.out.print(f"{path} = {json.dumps(shown, default=str)}", markup=False)
    for i, o in enumerate(chain):
        env.out.print(("  set at " if i == 0 else "  from   ") + str(o), markup=False)
    return 0


def _make_plan(env: Env, args, cluster, destroy: bool = False, state=None, after: str | None = None):
    """Compose and plan (apply.plan_job) against `state`: the caller's, held under its lock, or
    without one read unlocked, where an adoption is only shown. `after`: start only once that job
    in state has succeeded (hpctl.chain)."""
    from hpctl.apply import plan_job
    spec = _compose(env, args, cluster)
    held = state is not None
    state = state if held else env.state()
    p = plan_job(spec, state, lambda line: env.err.print(line, markup=False),
                 save_adoption=held, destroy=destroy, args=list(args), workspace=str(env.workspace.root))
    if after:
        from hpctl.apply import backend_of
        from hpctl.chain import after as chain_after
        record = state.jobs.get(after)
        status = backend_of(record).describe(record).state if record else None
        p.artifact = chain_after(p.artifact, p.backend, record, after, sorted(state.jobs), status)
        done = ", succeeded" if status == "SUCCEEDED" else ""
        p.summary["after"] = f"{after} ({record.backend} job {record.job_id}{done})"
    return p, spec


def _emit_plan(env: Env, plan, fmt: str) -> None:
    if fmt == "json":  # for machines: without rich
        click.echo(json.dumps(plan.to_json(), indent=2, sort_keys=True))
    elif fmt == "markdown":
        from hpctl.present import plan_markdown
        click.echo(plan_markdown(plan), nl=False)
    else:
        from hpctl.present import print_plan
        print_plan(plan, env.out)


@cli.command()
@recipe_args
@cluster_opt
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save the plan to FILE for apply.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 no changes, 1 error, 2 changes.")
@click.option("--destroy", is_flag=True, help="Plan cancelling and forgetting the job.")
@click.option("--write-artifacts", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the rendered artifacts into DIR (for review in version control).")
@click.option("--check", is_flag=True, help="Ask the scheduler to test the submission (Slurm: sbatch --test-only).")
@click.option("--after", metavar="JOB", help="Start only after JOB (in state) succeeds (local, Slurm).")
@common
def plan(env: Env, args, cluster, as_json, fmt, out, detailed_exitcode, destroy, write_artifacts, check,
         after) -> int:
    """Show what apply would do for RECIPE [key=value ...]. Writes nothing unless asked."""
    p, _ = _make_plan(env, args, cluster, destroy, after=after)
    _emit_plan(env, p, "json" if as_json else fmt)
    if check:
        from hpctl.backends import get_backend
        backend = get_backend(p.spec.get("cluster_type", ""))
        env.err.print(f"scheduler check: {backend.test_only(p.artifact)}", markup=False)
    if out:
        p.save(out)
        env.err.print(f"Saved the plan to {out}. Apply it with: hpctl apply {out}", markup=False)
    if write_artifacts:
        _write_artifacts(p, write_artifacts)
    return 2 if detailed_exitcode and p.has_changes else 0


def _write_artifacts(p, directory: Path) -> None:
    ext = {"sbatch": "sbatch", "manifest": "yaml", "command": "sh"}.get(p.artifact.kind, "txt")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{p.job}.{ext}").write_text(p.artifact.text)


@cli.command()
@click.argument("planfile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
@common
def show(env: Env, planfile, fmt) -> int:
    """Print a saved plan."""
    from hpctl.plan import Plan
    _emit_plan(env, Plan.load(planfile), fmt)
    return 0


@cli.command()
@recipe_args
@cluster_opt
@click.option("--auto-approve", is_flag=True, help="Skip the confirmation.")
@click.option("--after", metavar="JOB", help="Start only after JOB (in state) succeeds (local, Slurm).")
@common
def apply(env: Env, args, cluster, auto_approve, after) -> int:
    """Submit RECIPE [key=value ...] after showing its plan, or a saved PLANFILE as it is."""
    from hpctl.apply import apply_saved, execute
    from hpctl.plan import Plan
    from hpctl.present import print_plan
    say = lambda line: env.out.print(line, markup=False)  # noqa: E731
    if len(args) == 1 and Path(args[0]).is_file() and not args[0].endswith((".yaml", ".yml")):
        apply_saved(Plan.load(Path(args[0])), env.state_path, env.lock_timeout, say,
                    lambda line: env.err.print(line, markup=False))
        return 0
    with env.locked() as state:  # Terraform's order: lock, plan, confirm, apply, unlock
        p, spec = _make_plan(env, args, cluster, state=state, after=after)
        print_plan(p, env.out)
        if not p.has_changes:
            return 0
        if not auto_approve:
            env.out.print("\nDo you want to apply? Only 'yes' will be accepted.")
            answer = click.prompt("  Enter a value", default="", show_default=False, err=False)
            if answer.strip() != "yes":
                raise HpctlError("Apply cancelled.")
        execute(state, p, spec, say)
    return 0


@cli.command()
@click.argument("job")
@click.option("--auto-approve", is_flag=True)
@common
def destroy(env: Env, job, auto_approve) -> int:
    """Cancel JOB if it runs and forget it in state. Results, checkpoints and logs are kept."""
    from hpctl.apply import execute
    from hpctl.plan import Plan
    from hpctl.present import change_lines, footer
    with env.locked() as state:
        p = Plan.for_destroy(state.job(job), state)
        for line in change_lines(p.change):
            env.out.print(line, style="red", markup=False)
        env.out.print(footer(p))
        if not auto_approve:
            answer = click.prompt("Do you want to destroy? Only 'yes' will be accepted", default="", show_default=False)
            if answer.strip() != "yes":
                raise HpctlError("Destroy cancelled.")
        execute(state, p, None, lambda line: env.out.print(line, markup=False))
    return 0


def _refresh(env: Env, names: list[str]) -> list[tuple[Any, Any]]:
    from hpctl.apply import refresh_many
    with env.locked() as state:
        return refresh_many(state, names)


@cli.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until every job has ended.")
@click.option("--plot", is_flag=True, help="Also draw JOB's loss, learning rate and tokens/s over steps.")
@click.option("--plot-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the same plots to a PNG image.")
@common
def status(env: Env, job, as_json, watch, plot, plot_file) -> int:
    """Status of JOB (or every job in state): scheduler state, step, loss, tokens/s, ETA."""
    from hpctl.backends.base import TERMINAL
    names = [job] if job else []
    if (plot or plot_file) and not job:
        raise HpctlError("--plot and --plot-file draw one job", hint="name it: hpctl status JOB --plot")
    if plot and as_json:
        raise HpctlError("--plot draws text, which --json output cannot hold", hint="use --plot-file PATH.png")
    if plot_file is not None:
        from hpctl.plot import check_image_path
        check_image_path(plot_file)
    if watch and not as_json:  # until every job has ended; then its plots, when asked for
        from rich.live import Live

        from hpctl.present import status_table
        with Live(console=env.out, auto_refresh=False) as live:
            while True:
                rows = _refresh(env, names)
                live.update(status_table(rows, spark=True), refresh=True)
                if all(st.state in TERMINAL for _, st in rows):
                    break
                time.sleep(2)
    else:
        rows = _refresh(env, names)
        from hpctl.engines.evaluation import scores, scores_table
        if as_json:
            _print_json({"jobs": [{"name": r.name, "cluster": r.cluster, "backend": r.backend, "job_id": r.job_id,
                                   "results_dir": r.results_dir, **st.to_json(),
                                   **({"evaluation": found} if (found := scores(r.spec)) is not None else {})}
                                  for r, st in rows]})
        else:
            from hpctl.present import status_table
            env.out.print(status_table(rows))
            for r, _ in rows:  # an evaluation job's scores, once it wrote them
                if (found := scores(r.spec)) is not None:
                    env.out.print(scores_table(r.name, found))
    if plot or plot_file:
        _plot(env, rows[0][0], plot, plot_file)
    return 0


def _plot(env: Env, record, terminal: bool, path: Path | None) -> None:
    from hpctl import plot
    records = plot.read_metrics(record.results_dir)
    if terminal:
        width = min(env.out.width, 120) if env.out.is_terminal else 100
        click.echo(plot.terminal(records, record.results_dir, width=width, color=bool(env.out.color_system)), nl=False)
    if path:
        plot.image(records, record.results_dir, path, title=f"{record.name} ({record.job_id})")
        env.err.print(f"wrote {path}", markup=False)


@cli.command()
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.option("--rank", type=int, default=None, help="One rank's output.")
@common
def logs(env: Env, job, follow, rank) -> int:
    """Print JOB's log."""
    from hpctl.apply import backend_of
    record = env.state().job(job)
    for line in backend_of(record).logs(record, follow, rank):
        click.echo(line)
    return 0


@cli.command()
@click.argument("job")
@common
def cancel(env: Env, job) -> int:
    """Stop JOB (SIGTERM, then SIGKILL after a grace period). Results are kept."""
    from hpctl.apply import cancel as cancel_job
    with env.locked() as state:
        record = cancel_job(state, job)
    env.out.print(f"cancelled {job} ({record.backend} job {record.job_id})", markup=False)
    return 0


@cli.group("state")
def state_group() -> None:
    """Inspect and edit the recorded jobs."""


@state_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@common
def state_list(env: Env, as_json) -> int:
    st = env.state()
    if as_json:
        _print_json({"serial": st.serial, "lineage": st.lineage, "jobs": sorted(st.jobs)})
        return 0
    from hpctl.tables import MANY_ROWS, plain
    headers = ("job", "cluster", "backend", "id", "last status", "applied")
    rows = [(name, r.cluster, r.backend, r.job_id, r.status, r.applied_at) for name, r in sorted(st.jobs.items())]
    if len(rows) > MANY_ROWS:
        click.echo(plain(headers, rows))
        return 0
    from rich.table import Table
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    env.out.print(table)
    return 0


@state_group.command("show")
@click.argument("job")
@common
def state_show(env: Env, job) -> int:
    click.echo(json.dumps(env.state().job(job).to_json(), indent=2, sort_keys=True))
    return 0


@state_group.command("rm")
@click.argument("job")
@common
def state_rm(env: Env, job) -> int:
    """Forget JOB without touching the running job or its results."""
    with env.locked() as state:
        state.job(job)
        state.forget(job)
        state.save()
    env.out.print(f"removed {job} from state", markup=False)
    return 0


@cli.group()
def recipes() -> None:
    """The recipes in the workspace and the built-in catalog."""


@recipes.command("list")
@click.option("--json", "as_json", is_flag=True)
@common
def recipes_list(env: Env, as_json) -> int:
    from hpctl.catalog import describe_all
    rows = describe_all(env.workspace)
    if as_json:
        _print_json({"recipes": rows})
        return 0
    from rich.table import Table
    table = Table("name", "family", "params", "type", "nodes x devices", "seq")
    for r in rows:
        table.add_row(r["name"], str(r["family"]), r["params_h"], r["type"], r["layout"], str(r["seq"]))
    env.out.print(table)
    return 0


@recipes.command("show")
@click.argument("name")
@common
def recipes_show(env: Env, name) -> int:
    found = env.workspace.recipe(name)
    env.out.print(f"# {found.display}", markup=False)
    click.echo(found.path.read_text(), nl=False)
    return 0


@recipes.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@common
def recipes_check(env: Env, directory, overrides, as_json) -> int:
    """Plan every recipe of a HyperPod checkout DIRECTORY (config.yaml, cluster/, recipes/) for its
    slurm, k8s and sm_jobs clusters, with optional overrides for all (e.g. container=IMAGE) or for
    one (sm_jobs:+cluster.role_arn=ARN). Exit 0 when every supported recipe (run.model_type hf or
    llm_finetuning_aws) plans on each."""
    from hpctl.catalog import CHECK_CLUSTERS, check_collection, check_summary, summary_line
    from dataclasses import asdict
    rows = check_collection(directory.resolve(), list(overrides))
    summary = check_summary(rows)
    if as_json:
        _print_json({"directory": str(directory.resolve()), "overrides": list(overrides),
                     "recipes": [asdict(r) for r in rows], "summary": summary})
        return 0 if summary["ok"] else 1
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    mark = {True: "[green]yes[/green]", False: "[red]no[/red]"}
    table = Table(box=box.SIMPLE, caption=f"{', '.join(CHECK_CLUSTERS)}: planned for that cluster")
    table.add_column("recipe", overflow="fold")
    for name in ("parsed", "valid", *CHECK_CLUSTERS, "trainable"):
        table.add_column(name, no_wrap=True)
    table.add_column("reason", overflow="fold")
    for r in rows:
        where = (r.location or "").replace(f"recipes/{r.name}.yaml:", "line ")  # its own file: the line is enough
        reason = escape(f"{r.reason} ({where})" if r.reason and where else r.reason or "")
        table.add_row(escape(r.name), mark[r.parsed], mark[r.valid], *(mark[r.planned[c]] for c in CHECK_CLUSTERS),
                      mark[r.trainable], reason)
    env.out.print(table)
    env.out.print(summary_line(summary), markup=False)
    return 0 if summary["ok"] else 1


@cli.command()
@cluster_opt
@click.option("--json", "as_json", is_flag=True)
@common
def doctor(env: Env, cluster, as_json) -> int:
    """Check that this machine can submit to the chosen cluster; prints a fix for each failure."""
    from dataclasses import asdict
    from hpctl.compose import cluster_type_of
    from hpctl.doctor import reads_general_config, run_checks
    from hpctl.loader import load_file
    found = env.workspace.cluster(cluster or "local")
    data = load_file(found.path, found.display).data
    ctype = cluster_type_of(data, found.name) or found.name  # unknown: doctor names it
    general = env.workspace.general_config() if reads_general_config(ctype) else None
    results = run_checks(ctype, data, load_file(general.path, general.display).data if general else None)
    if as_json:
        _print_json({"cluster": found.name, "checks": [asdict(c) for c in results]})
    else:
        from rich.table import Table
        table = Table("check", "", "detail", "fix")
        for c in results:
            table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.detail, "" if c.ok else c.fix)
        env.out.print(table)
    return 0 if all(c.ok for c in results) else 1


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--restore", is_flag=True, help="Undo: put HyperPod's main.py back.")
def init(directory, restore) -> int:
    """Make a HyperPod recipes checkout DIRECTORY run hpctl: its main.py becomes a drop-in (HyperPod's
    kept as main.py.hyperpod), so its launcher scripts plan and apply with hpctl unchanged."""
    from hpctl import dropin
    click.echo(dropin.restore(directory) if restore else dropin.init(directory))
    return 0


def _wants_json(argv: list[str]) -> bool:
    fmt = argv[argv.index("--format") + 1] if "--format" in argv[:-1] else None
    return "--json" in argv or "--format=json" in argv or fmt == "json"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        rc = cli.main(args=argv, prog_name="hpctl", standalone_mode=False)
    except HpctlError as e:
        if _wants_json(argv):  # machine readers get the located problems on stdout too
            _print_json({"error": True, "problems": [p.to_json() for p in e.problems]})
        if sys.stderr.isatty():
            from rich.markup import escape
            _console("--no-color" in argv, stderr=True).print(f"[red]Error:[/red] {escape(e.render())}", highlight=False)
        else:
            print(f"Error: {e.render()}", file=sys.stderr)
        sys.exit(1)
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        print(f"Error: internal error: {type(e).__name__}: {e}\n  hint:     rerun with --debug for a traceback",
              file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
