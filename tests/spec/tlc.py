"""``spec/check.py`` for the TLC tests, and its models run ahead in the background.

TLC is CPU-bound (two workers) and the slowest part of the suite: run one model after
another, it took about a third of the whole run. The rest of the suite mostly waits (on
timeouts, recoveries, other processes) with a core or more idle. So once collection
has picked the TLC tests, :func:`start` runs their models in order in one thread, each
under ``nice -n 19``: TLC takes only the CPU the other tests leave, and a test that
needs it gets it first. Each TLC test then takes its model's result (waiting for it if
it is not done, or running it itself if nothing ran it ahead)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from types import ModuleType
from typing import Any

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"

#: nice(1)'s lowest priority: the scheduler gives TLC a core only when nobody else wants it.
NICENESS = 19


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("paxos_commit_spec_check", SPEC_DIR / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


check = _load_check()

_ahead: dict[str, Future[Any]] = {}


def start(models: list[Any]) -> None:
    """Run ``models`` in the background, in order, if Java and TLC are here (without them
    the tests skip, with the reason)."""
    try:
        check.find_java()
        jar = check.find_jar()
    except check.ToolMissing:
        return
    todo = [m for m in models if m.name not in _ahead]
    for m in todo:
        _ahead[m.name] = Future()

    def run() -> None:
        for m in todo:
            fut = _ahead[m.name]
            if not fut.set_running_or_notify_cancel():  # cancelled: a test ran it, or stop()
                continue
            try:
                fut.set_result(check.run_model(m, jar, niceness=NICENESS))
            except BaseException as exc:  # the test reports it
                fut.set_exception(exc)

    threading.Thread(target=run, name="tlc-ahead", daemon=True).start()


def result(model: Any, jar: Path, timeout: float) -> Any:
    """The model's result: from the background run, else run here."""
    fut = _ahead.get(model.name)
    if fut is None or fut.cancel():  # not started ahead: run it now, at full priority
        return check.run_model(model, jar)
    return fut.result(timeout)


def stop() -> None:
    """The session ends: start nothing more and stop TLC runs still going (an interrupted
    suite must not leave TLC running on in the background)."""
    for fut in _ahead.values():
        fut.cancel()
    check.kill_running()
