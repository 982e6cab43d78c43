"""ringsim's Python API, for notebooks, tests and scripts.  The ``ringsim`` command is built on it.

    from slowpath import api

    if __name__ == "__main__":            # workers are spawned: scripts need the guard
        with api.open_vm() as vm:          # the built-in PC; or api.open_vm(api.load_config("vm.toml"))
            result = api.run_accesses(vm, "out 0x541 4 0x1\\nin 0x540 4")
            print(result.deferred, result.final_status)
            print(api.statistics(vm)["/IOM/IoPortCommits"].value)

A VM is a context manager that owns its worker processes, sockets and shared memory;
it can run several workloads one after the other (device state carries over,
statistics restart with each run).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from shared.trace import TraceOp, parse_text
from slowpath import statistics as _statistics
from slowpath.config import VmConfig
from slowpath.config import load_config as _load_config_file
from slowpath.config import parse_config as _parse_config
from slowpath.report import RunResult
from slowpath.vm import VM
from slowpath.workloads import load_workload

__all__ = [
    "VM",
    "RunResult",
    "TraceOp",
    "VmConfig",
    "load_config",
    "open_vm",
    "parse_config",
    "run_accesses",
    "run_workload",
    "statistics",
]


def load_config(path: str | Path | None = None) -> VmConfig:
    """The VM config in *path* (CFGM-shaped TOML), or the built-in PC when *path* is None.

    Raises ``ConfigFileError`` naming the file and line of what is wrong.
    """
    if path is None:
        configs = resources.files("slowpath").joinpath("configs")
        text = configs.joinpath("default.toml").read_text(encoding="utf-8")
        return _parse_config(text, "builtin:default.toml", Path(str(configs)))
    return _load_config_file(Path(path))


def parse_config(text: str, name: str = "<string>", folder: Path | None = None) -> VmConfig:
    """A VM config from TOML text; relative paths in it start at *folder* (default: here)."""
    return _parse_config(text, name, folder)


def open_vm(
    config: VmConfig | None = None,
    *,
    vcpus: int | None = None,
    transport: str = "ipc",
    journal_limit: int = 0,
    mode: str | None = None,
    listen_any: bool = False,
) -> VM:
    """A VM built from *config* (default: the built-in PC), to use in a ``with`` block.

    *journal_limit* > 0 journals each vCPU's first accesses for
    ``slowpath.explain.explain_lines`` / ``timeline`` (strict mode).  *mode* (strict,
    posted, doorbell) overrides the config's ``Mode``.
    """
    return VM(
        config or load_config(), vcpus=vcpus, transport=transport, journal_limit=journal_limit, mode=mode,
        listen_any=listen_any,
    )


def run_workload(
    vm: VM,
    workload: str | Path | list[TraceOp] | None = None,
    *,
    source: str = "<operations>",
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Run a workload on *vm*: a trace file, a built-in program's name (None: ``hello``),
    or operations already parsed (*source* names them in errors).  Raises ``TraceError``
    for a bad trace line."""
    if isinstance(workload, list):
        ops = workload
    else:
        source, ops = load_workload(None if workload is None else str(workload))
    return vm.run(vm.split_workload(ops, source), progress=progress)


def run_accesses(vm: VM, text: str, vcpu: int = 0) -> RunResult:
    """Run single accesses written in trace syntax (``out 0x3f8 1 0x41``, ``rd 0xfec00010 4``)
    on one vCPU; reads carrying ``= VALUE`` are checked as in a replay."""
    ops = [op._replace(vcpu=vcpu) for op in parse_text(text, "<accesses>")]
    return vm.run(vm.split_workload(ops, "<accesses>"))


def statistics(vm: VM) -> _statistics.Snapshot:
    """The VM's statistics after its last run, as a STAM-like tree of named samples."""
    return _statistics.snapshot(vm)
