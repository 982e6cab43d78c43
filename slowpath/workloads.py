"""Finding a workload by what the user typed: a trace file, or a built-in guest program.

Built-in programs are traces too, shipped as data beside the ring-0 worker that runs
them (``fastpath/programs/<name>.trace``); only their text is read here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from shared.trace import TraceError, TraceOp, parse_text, read_trace

DEFAULT_PROGRAM = "hello"


def builtin_programs() -> list[str]:
    folder = resources.files("fastpath").joinpath("programs")
    return sorted(entry.name.removesuffix(".trace") for entry in folder.iterdir() if entry.name.endswith(".trace"))


def load_workload(spec: str | None) -> tuple[str, list[TraceOp]]:
    """(source name, operations) for a path or a built-in program name; raises TraceError."""
    name = spec or DEFAULT_PROGRAM
    program = resources.files("fastpath").joinpath("programs", f"{name}.trace")
    if program.is_file():
        source = f"builtin:{name}"
        return source, parse_text(program.read_text(encoding="utf-8"), source)
    path = Path(name)
    if path.is_file():
        return str(path), read_trace(path)
    raise TraceError(
        f"{name}: no such trace file, and no built-in program of that name "
        f"(built-in: {', '.join(builtin_programs())})"
    )
