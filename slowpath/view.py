"""Terminal output with rich: the run summary and the info views as tables, a progress bar.

Used only when standard output is a terminal and JSON was not asked for; otherwise the
CLI prints the plain text of :meth:`RunResult.render` and the info dumps, which read the
same and are stable for scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from slowpath.report import RunResult

PROGRESS_FROM = 5000  # accesses: shorter runs finish before a bar would help


def interactive() -> bool:
    return sys.stdout.isatty()


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback for VM.run drawing a bar, or None when there is nothing to draw."""
    if total < PROGRESS_FROM or not interactive():
        yield None
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, _total: bar.update(task, completed=done)


@contextmanager
def section_bar(sections: int) -> Iterator[Callable[[str], None]]:
    """A callback advancing a bar one section at a time (plain lines when not a terminal)."""
    if not interactive():
        yield lambda name: print(f"[bench] {name}", file=sys.stderr, flush=True)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("benchmark", total=sections)
        started = [False]

        def step(name: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=name)

        yield step


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    return table


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """The run summary as tables."""
    console = console or Console()
    overview = _table(f"VM {result.vm!r}: {result.vcpus} vCPU(s), {result.wall_s:.3f} s", "", "")
    overview.add_row("accesses", str(result.accesses))
    overview.add_row("handled in ring-0", str(result.ring0_handled))
    overview.add_row("deferred to ring-3", str(sum(result.deferred.values())))
    for reason, count in result.deferred.items():
        overview.add_row(f"  {reason.replace('_', ' ')}", str(count))
    overview.add_row("pending writes committed", str(result.commits))
    overview.add_row("final status", f"{result.final_status['name']} ({result.final_status['rc']})")
    if result.exit_status is not None:
        overview.add_row("guest exit status", str(result.exit_status))
    replay = result.replay
    overview.add_row("reads checked / matched", f"{replay['reads_checked']} / {replay['reads_matched']}")
    timed = replay["time_dependent"]
    if timed["reads_checked"]:
        overview.add_row("time-dependent reads checked / matched",
                         f"{timed['reads_checked']} / {timed['reads_matched']}")
    units = replay["units"] or 1
    on_devices, in_ring0 = replay["units_on_devices"], replay["units_ring0"]
    overview.add_row("units on devices", f"{on_devices} ({100 * on_devices / units:.1f}%)")
    overview.add_row("units finished in ring-0", f"{in_ring0} ({100 * in_ring0 / units:.1f}%)")
    console.print(overview)

    if len(replay["per_device"]) > 1:
        devices = _table("replay by device", "device", "accesses", "units", "checked", "matched", "timed", "matched")
        for name, row in sorted(replay["per_device"].items(), key=lambda item: -item[1]["units"]):
            devices.add_row(
                name, str(row["accesses"]), str(row["units"]), str(row["reads_checked"]), str(row["reads_matched"]),
                str(row["time_dependent_checked"]), str(row["time_dependent_matched"]),
            )
        console.print(devices)
    if replay["mismatches"]:
        misses = _table("first mismatches", "line", "access", "expected", "got")
        for miss in replay["mismatches"][:10]:
            misses.add_row(
                str(miss["line"]), f"{miss['access']} {miss['address']:#x}/{miss['size']}",
                _show(miss["expected"]), _show(miss["got"]),
            )
        console.print(misses)

    ports = _table("I/O port regions", "region", "ports", "in R0", "out R0", "in R3", "out R3", "in R0→R3", "out R0→R3")
    mmio = _table("MMIO regions", "region", "mapping", "read R0", "write R0", "read R3", "write R3", "read R0→R3",
                  "write R0→R3")
    for region in result.regions:
        if "ports" in region:
            ports.add_row(region["description"], region["ports"], *(str(region[k]) for k in (
                "in_r0", "out_r0", "in_r3", "out_r3", "in_r0_to_r3", "out_r0_to_r3")))
        else:
            mmio.add_row(region["description"], region["mmio"], *(str(region[k]) for k in (
                "read_r0", "write_r0", "read_r3", "write_r3", "read_r0_to_r3", "write_r0_to_r3")))
    console.print(ports)
    if mmio.row_count:
        console.print(mmio)
    for merge in result.merges[:5]:
        console.print(f"vCPU {merge['vcpu']}: merged {merge['before']} with {merge['commit']} into {merge['merged']}")
    for name, text in result.console.items():
        if text:
            console.print(Panel(text.rstrip("\n"), title=f"output of {name}", title_align="left"))
    for error in result.errors:
        console.print(f"[red]error:[/red] {error}")


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 16 else value[:16].hex() + "..."
    return f"{value:#x}" if isinstance(value, int) else repr(value)


def print_info(text: str, console: Console | None = None) -> None:
    """An ``info`` dump (already in VirtualBox's columns) as a table."""
    console = console or Console()
    lines = text.splitlines()
    table = Table(title=lines[0], title_justify="left", header_style="bold", show_edge=False)
    table.add_column(lines[1].strip(), no_wrap=True)
    for line in lines[2:]:
        table.add_row(line)
    console.print(table)
