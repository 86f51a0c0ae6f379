"""``python -m orch.stack.prestart [--import MODULE]... -- MODULE [ARG]...``: a component's imports done while
what it needs is still starting, its ``__main__`` run once ``orch up`` says go.

Why: ORCH's worker spends seconds of CPU importing Prefect before it polls; started only once the Prefect
server answered, those seconds were on the critical path of every start (measured in
scripts/bench_startup.py). Started with the server instead, it imports the named modules at once, then
waits on standard input: the supervisor, which knows when the server is ready and the database at its
schema, writes a line there and the component runs; end of input (the supervisor died) ends it instead.
The component runs in this process (``runpy``), so its pid, the tail of its command line and its signal
handling are those of ``python -m MODULE``.

The target module itself is not imported ahead: ``runpy`` would then execute a second copy of it.
"""

from __future__ import annotations

import importlib
import runpy
import sys

from orch.lean_imports import lean_process

USAGE = "usage: python -m orch.stack.prestart [--import MODULE]... -- MODULE [ARG]..."


def parse(argv: list[str]) -> tuple[list[str], list[str]]:
    """(modules to import ahead, the component's ``MODULE ARG...``)."""
    preload: list[str] = []
    while len(argv) >= 2 and argv[0] == "--import":
        preload.append(argv[1])
        argv = argv[2:]
    if len(argv) < 2 or argv[0] != "--":
        raise SystemExit(USAGE)
    return preload, argv[1:]


def main(argv: list[str]) -> None:
    preload, (module, *args) = parse(argv)
    lean_process(prefect=any(name.partition(".")[0] == "prefect" for name in preload))
    for name in preload:
        importlib.import_module(name)
    if not sys.stdin.readline():
        raise SystemExit("orch.stack.prestart: the supervisor went away before starting " + module)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
