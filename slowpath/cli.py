"""The ``ringsim`` command.

    ringsim run [--config FILE.toml] [--workload TRACE|NAME] [--vcpus N] [--json]
                [--explain [--limit N]] [--timeline FILE.json] [--stats] [--stats-out FILE]
    ringsim stats FILE [--pattern P] [--flat] [--all] [--json]
    ringsim info ioport|mmio [--config FILE.toml]

Exit statuses: 0 after a clean run; the guest's ``(value << 1) | 1`` when it ended the VM
through isa-debug-exit; 1 when a worker died or the run failed; 2 for a bad config,
workload, trace line or argument; 130 / 143 after Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from shared.status import VBoxError
from shared.trace import TraceError
from slowpath import api, statistics
from slowpath import fuzz as guest_fuzzing
from slowpath.config import ConfigFileError, VmConfig
from slowpath.contention import ContentionError, ContentionInjector, parse_contention
from slowpath.explain import explain_lines, write_timeline
from slowpath.report import RunResult
from slowpath.server import WorkerDied
from slowpath.view import interactive, print_info, print_summary, progress_bar, section_bar
from slowpath.vm import VM
from slowpath.workloads import load_workload

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(Exception):
    """SIGTERM arrived; unwinds like Ctrl-C so every resource is released."""


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"ringsim: {message}", err=True)
    sys.exit(status)


def load_vm_config(path: Path | None) -> VmConfig:
    return api.load_config(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _print_result(result: RunResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), default=_json_default, indent=2))
    elif interactive():
        print_summary(result)
    else:
        click.echo(result.render())


@click.group()
def main() -> None:
    """ringsim: a two-tier (ring-0 / ring-3) simulated hypervisor I/O monitor."""
    signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM unwinds like Ctrl-C: every VM cleans up


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="VM config (TOML, CFGM-shaped).")
@click.option("--workload", help="A trace file, or a built-in program name (default: hello).")
@click.option("--vcpus", type=click.IntRange(1, 64), help="Number of vCPUs (default: the config's NumCPUs).")
@click.option("--transport", type=click.Choice(["ipc", "tcp"]), default="ipc", show_default=True)
@click.option("--listen-any", is_flag=True,
              help="With --transport tcp, listen on every interface, not only loopback (warns).")
@click.option("--mode", type=click.Choice(["strict", "posted", "doorbell"]), default=None,
              help="How deferred writes travel (default: the config's Mode, strict).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@click.option("--explain", is_flag=True, help="Print each access's path through ring-0 and ring-3.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Accesses per vCPU to explain / put on the timeline (default 100 / 10000).")
@click.option("--timeline", "timeline_path", type=click.Path(path_type=Path),
              help="Write a Chrome/Perfetto trace-event file of the accesses (open it in ui.perfetto.dev).")
@click.option("--contention", "contention_specs", multiple=True, metavar="SPEC",
              help="Inject contention from ring-3 during the run, e.g. 'hold:testdev#0:duty=0.5:period=2ms' "
                   "or 'remap:edu#0:rate=200' (repeatable).")
@click.option("--stats", "show_stats", is_flag=True, help="Print the statistics tree after the run.")
@click.option("--stats-out", "stats_path", type=click.Path(path_type=Path),
              help="Write the statistics to a file that `ringsim stats` prints.")
def run(
    config_path: Path | None,
    workload: str | None,
    vcpus: int | None,
    transport: str,
    listen_any: bool,
    mode: str | None,
    as_json: bool,
    explain: bool,
    limit: int | None,
    timeline_path: Path | None,
    contention_specs: tuple[str, ...],
    show_stats: bool,
    stats_path: Path | None,
) -> None:
    """Create the VM, run the workload on its vCPUs, power off and report."""
    journal_limit = (limit or (100 if explain else 10_000)) if explain or timeline_path else 0
    try:
        config = api.load_config(config_path)
        source, ops = load_workload(workload)
        holds, remaps = parse_contention(list(contention_specs))
        if listen_any:
            if transport != "tcp":
                raise click.UsageError("--listen-any needs --transport tcp (ipc endpoints are files)")
            click.echo("ringsim: warning: ring-3 will listen on every interface (--listen-any)", err=True)
            # The VM warns API users the same way; on the command line the line above says it once.
            warnings.filterwarnings("ignore", message="ring-3 listens on every interface")
        with api.open_vm(config, vcpus=vcpus, transport=transport, journal_limit=journal_limit, mode=mode,
                         listen_any=listen_any) as vm:
            try:
                with ContentionInjector(vm, holds, remaps) as injector, \
                        progress_bar(0 if as_json else len(ops), f"replaying {source}") as progress:
                    result = api.run_workload(vm, ops, source=source, progress=progress)
            except (KeyboardInterrupt, Terminated) as stop:
                # A clean power-off, then the summary of what ran, then the signal's status.
                _print_result(vm.result_so_far(), as_json)
                if isinstance(stop, KeyboardInterrupt):
                    _fail("interrupted; the VM was powered off", EXIT_INTERRUPTED)
                _fail("terminated; the VM was powered off", EXIT_TERMINATED)
            result.contention = injector.report() if contention_specs else {}
            if explain and not as_json:
                click.echo("\n".join(explain_lines(vm)))
                click.echo()
            if timeline_path is not None:
                write_timeline(vm, timeline_path)
            samples = api.statistics(vm)
        if stats_path is not None:
            stats_path.write_text(json.dumps(statistics.to_json(samples)))
    except (ConfigFileError, TraceError, ContentionError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except VBoxError as exc:
        _fail(f"VM creation failed: {exc}", EXIT_BAD_INPUT)
    except WorkerDied as exc:
        _fail(f"run failed: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted; the VM was powered off", EXIT_INTERRUPTED)
    except Terminated:
        _fail("terminated; the VM was powered off", EXIT_TERMINATED)
    _print_result(result, as_json)
    if show_stats and not as_json:
        click.echo(statistics.render_tree(statistics.select(samples)))
    if result.exit_status is not None:
        sys.exit(result.exit_status)


@main.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--pattern", help="Only names matching this: globs with * and ?, alternatives split by | "
                                "(VBoxManage debugvm statistics --pattern).")
@click.option("--flat", is_flag=True, help="One line per sample, as STAMR3Print does, instead of a tree.")
@click.option("--all", "include_zero", is_flag=True, help="Also show the samples that are still zero.")
@click.option("--json", "as_json", is_flag=True, help="Print the selected samples as JSON.")
def stats(path: Path, pattern: str | None, flat: bool, include_zero: bool, as_json: bool) -> None:
    """Print the statistics a run saved with `ringsim run --stats-out FILE`."""
    try:
        samples = statistics.from_json(json.loads(path.read_text()))
    except (ValueError, OSError) as exc:
        _fail(f"{path}: not a ringsim statistics file: {exc}", EXIT_BAD_INPUT)
    chosen = statistics.select(samples, pattern, include_zero=include_zero)
    if as_json:
        click.echo(json.dumps(statistics.to_json(chosen), indent=2))
    else:
        click.echo(statistics.render_flat(chosen) if flat else statistics.render_tree(chosen))


@main.group()
def info() -> None:
    """VirtualBox-style info dumps of a VM as its config builds it."""


def _info(config_path: Path | None, dump: Callable[[VM], str]) -> None:
    try:
        with api.open_vm(api.load_config(config_path)) as vm:
            if interactive():
                print_info(dump(vm))
            else:
                click.echo(dump(vm))
    except ConfigFileError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except VBoxError as exc:
        _fail(f"VM creation failed: {exc}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except Terminated:
        _fail("terminated", EXIT_TERMINATED)


@info.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="VM config (TOML).")
def ioport(config_path: Path | None) -> None:
    """Dump all I/O port registrations (VirtualBox's `info ioport`)."""
    _info(config_path, lambda vm: vm.iom.info())


@info.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="VM config (TOML).")
def mmio(config_path: Path | None) -> None:
    """Dump all MMIO registrations (VirtualBox's `info mmio`)."""
    _info(config_path, lambda vm: vm.iom.info_mmio())


@main.command()
@click.option("--quick", is_flag=True, help="A short run (under a minute) for smoke tests: the figures are rougher.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench-out"), show_default=True,
              help="Folder for results.json, results.md and the PNG plots.")
@click.option("--transport", type=click.Choice(["ipc", "tcp", "inproc"]), default="ipc", show_default=True,
              help="inproc measures the raw floor in one process; the VM then uses ipc.")
@click.option("--pin", type=click.Choice(["none", "same", "split"]), default="none", show_default=True,
              help="Where ring-3 and the workers run: as the scheduler likes, one CPU, or apart.")
def bench(quick: bool, out_dir: Path, transport: str, pin: str) -> None:
    """Measure what deferral costs, side by side, and write JSON, markdown and plots."""
    from bench.suite import run_suite  # matplotlib and friends only when benchmarking

    sections = ["fast path", "lookup cost", "deferrals", "raw transport", "contention", "plots"]
    with section_bar(len(sections)) as step:
        results = run_suite(out_dir, quick=quick, transport=transport, pin=pin, step=step)
    click.echo((out_dir / "results.md").read_text())
    click.echo(f"written: {out_dir / 'results.json'}, {out_dir / 'results.md'}, "
               f"{', '.join(str(out_dir / name) for name in ('contention.png', 'latency.png', 'lookup.png'))}")
    missed = [t["target"] for t in results["targets"].values() if not t["met"]]
    if missed:
        click.echo("targets not met: " + "; ".join(missed))


@main.group()
def fuzz() -> None:
    """Hostile-guest fuzzing."""


@fuzz.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def guest(args: tuple[str, ...]) -> None:
    """Random guest accesses against the VM, invariants checked (--help: the options)."""
    sys.exit(guest_fuzzing.main(list(args)))
