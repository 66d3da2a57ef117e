"""The mutation tool (``scripts/mutation.py``) measures what it says: the tests run the mutant, the
mutants are the same from run to run (the allow-list and a seed name them), issue 30's 13 mutations
still apply to the engine as it is, and no source file is written."""

from __future__ import annotations

import random

from scripts import mutation
from scripts.mutation_issue30 import NAMED

ENGINE = mutation.REPO / "airflow_provider_openhands" / "engine" / "engine.py"
FAST = ["tests/test_engine_auth.py"]


def _mutant(text: str) -> mutation.Mutant:
    found = [mutant for mutant in mutation.mutants_of(ENGINE) if mutant.id.endswith(text)]
    assert len(found) == 1, found
    return found[0]


def test_the_mutants_are_the_same_each_run_each_named_once_and_each_compiles() -> None:
    first, second = list(mutation.mutants_of(ENGINE)), list(mutation.mutants_of(ENGINE))
    assert first == second and len(first) > 300
    assert len({mutant.id for mutant in first}) == len(first)  # the allow-list names each one
    for mutant in random.Random(30).sample(first, 25):
        mutation.mutated_code(ENGINE, mutant.index)  # compiles
    # the kinds of change the docstring promises are all there
    ids = " ".join(mutant.id for mutant in first)
    for change in (" -> ", "removed: ", " and ", " or ", "True -> False", "min(", "max("):
        assert change in ids, change


def test_a_mutant_that_breaks_every_step_is_killed_and_the_code_as_it_is_passes() -> None:
    before = ENGINE.read_text()
    deadly = _mutant("Engine.step: removed: return action")
    killed = mutation.run_tests(ENGINE, str(deadly.index), 120.0, FAST)
    assert killed.verdict == "killed" and killed.by.startswith("tests/test_engine_auth.py::"), killed
    assert mutation.run_tests(None, "clean", 120.0, FAST).verdict == "survived"
    assert ENGINE.read_text() == before  # served from memory: the file is never written


def test_issue_30_s_mutations_each_still_apply_once() -> None:
    for label, file, text, replacement in NAMED:
        assert (mutation.REPO / file).read_text().count(text) == 1, label
        assert text != replacement
