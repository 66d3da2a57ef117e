"""Mutation testing of the lifecycle engine (``airflow_provider_openhands/engine/*.py``), seeded and sampled.

Each mutant is one small change to one line's code: a comparison flipped (``<`` to ``<=``, ``==`` to
``!=``, ``in`` to ``not in``...), ``and``/``or`` swapped, a ``not`` dropped, ``True``/``False``
swapped, an integer one more, ``+``/``-`` swapped, ``min``/``max`` swapped, or a statement (an
assignment, a call, a ``return``) removed. A sample of N, drawn with a fixed seed, is run against the
engine's own tests (``tests/test_engine_*.py``: the model's random search at its CI settings and the
pinned scenarios); a mutant that every test passes *survives*. The score is killed / (killed +
survived); mutants in ``tests/mutation_allowlist.txt`` (equivalent: no test can tell them apart,
each with its reason) are not drawn.

Why a script of its own rather than mutmut or cosmic-ray: no dependency (the engine is pure, so a
mutant needs no build step, no database, no Airflow), a mutant is served to the test process from
memory by an import hook (the source files are never written: nothing to restore after a crash or
Ctrl-C, and other worktrees' runs are not disturbed), the operators are the few that matter for
decision code, and a run fits a CI step of a few minutes (tests stop at the first failure, no
shrinking).

    .venv/bin/python scripts/mutation.py --sample 40 --seed 30 --jobs 2
    .venv/bin/python scripts/mutation.py --list                 # every mutant, with its id
    .venv/bin/python scripts/mutation.py --only "Engine._expired"  # the mutants whose id contains it
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib.abc
import importlib.util
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_openhands"
TARGETS = sorted(path for path in (REPO / PACKAGE / "engine").glob("*.py") if path.name != "__init__.py")
TESTS = sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_engine_*.py"))
ALLOWLIST = REPO / "tests" / "mutation_allowlist.txt"

FLIPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITHMETIC: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add}
SWAPPED_CALLS = {"min": "max", "max": "min"}


@dataclass(frozen=True)
class Mutant:
    """One change: the ``index``-th mutation point of ``path``; ``id`` names it without a line number
    (lines move as the engine is edited), for the allow-list."""

    path: Path
    index: int
    line: int
    id: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 90 else text[:87] + "..."


def is_log_call(stmt: ast.stmt) -> bool:
    """``self.log(...)``: log wording is checked by the tests of what users see, not the engine's."""
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "log"


def is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


class Mutator:
    """Walks a module's tree in a fixed order; each mutation point gets the next index. With ``target``
    set, the tree is changed at that point only and the walk says what it did."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.count = 0
        self.points: list[tuple[int, str, str]] = []  # (line, qualname, description)
        self.scope: list[str] = []

    def point(self, node: ast.AST, describe: str) -> bool:
        """Registers a mutation point; True if it is the one to apply."""
        index, self.count = self.count, self.count + 1
        self.points.append((getattr(node, "lineno", 0), ".".join(self.scope) or "<module>", describe))
        return index == self.target

    def run(self, tree: ast.Module) -> ast.Module:
        self.body(tree.body)
        return tree

    def body(self, stmts: list[ast.stmt]) -> None:
        for i, stmt in enumerate(stmts):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.scope.append(stmt.name)
                self.body(stmt.body)
                self.scope.pop()
                continue
            if isinstance(stmt, (ast.Import, ast.ImportFrom)) or is_docstring(stmt) or is_log_call(stmt):
                continue
            in_function = bool(self.scope) and not isinstance(stmt, ast.AnnAssign)
            deletable = isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Expr, ast.Return)) and in_function
            if deletable and self.point(stmt, f"removed: {short(stmt)}"):
                stmts[i] = ast.copy_location(ast.Pass(), stmt)
                continue
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(stmt, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    self.expressions_of(stmt, skip=("body", "orelse", "finalbody", "handlers"))
                    break
            else:
                self.expressions_of(stmt, skip=())
                continue
            for name in ("body", "orelse", "finalbody"):
                inner = getattr(stmt, name, None)
                if isinstance(inner, list) and inner:
                    self.body(inner)
            for handler in getattr(stmt, "handlers", []) or []:
                self.body(handler.body)

    def expressions_of(self, stmt: ast.stmt, skip: tuple[str, ...]) -> None:
        for name, value in ast.iter_fields(stmt):
            if name in skip:
                continue
            if isinstance(value, ast.expr):
                setattr(stmt, name, self.expr(value))
            elif isinstance(value, list):
                value[:] = [self.expr(item) if isinstance(item, ast.expr) else item for item in value]

    def expr(self, node: ast.expr) -> ast.expr:
        """The expression with its children walked first (left to right), then itself."""
        if isinstance(node, ast.JoinedStr):  # message text: not decisions
            return node
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.expr):
                setattr(node, name, self.expr(value))
            elif isinstance(value, list):
                value[:] = [self.expr(item) if isinstance(item, ast.expr) else item for item in value]
        return self.mutate(node)

    def mutate(self, node: ast.expr) -> ast.expr:
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                flip = FLIPS.get(type(op))
                if flip is None:
                    continue
                changed = copy.deepcopy(node)
                changed.ops[k] = flip()
                if self.point(node, f"{short(node)} -> {short(changed)}"):
                    return changed
        if isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            changed = ast.copy_location(ast.BoolOp(op=other, values=node.values), node)
            if self.point(node, f"{short(node)} -> {short(changed)}"):
                return changed
        not_op = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        if not_op and self.point(node, f"{short(node)} -> {short(node.operand)}"):
            return node.operand
        if isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC:
            changed = ast.copy_location(
                ast.BinOp(left=node.left, op=ARITHMETIC[type(node.op)](), right=node.right), node
            )
            if self.point(node, f"{short(node)} -> {short(changed)}"):
                return changed
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, bool) and self.point(node, f"{value} -> {not value}"):
            return ast.copy_location(ast.Constant(not value), node)
        if type(value) is int and self.point(node, f"{value} -> {value + 1}"):
            return ast.copy_location(ast.Constant(value + 1), node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SWAPPED_CALLS:
            changed = copy.copy(node)
            changed.func = ast.copy_location(ast.Name(SWAPPED_CALLS[node.func.id], ast.Load()), node.func)
            if self.point(node, f"{short(node)} -> {short(changed)}"):
                return changed
        return node


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def mutants_of(path: Path) -> Iterator[Mutant]:
    walk = Mutator()
    walk.run(ast.parse(path.read_text(), str(path)))
    seen: dict[str, int] = {}
    for index, (line, scope, describe) in enumerate(walk.points):
        base = f"{path.name} {scope}: {describe}"
        seen[base] = seen.get(base, 0) + 1
        yield Mutant(path, index, line, base if seen[base] == 1 else f"{base} #{seen[base]}")


def mutated_code(path: Path, index: int):
    tree = Mutator(index).run(ast.parse(path.read_text(), str(path)))
    return compile(ast.fix_missing_locations(tree), str(path), "exec")


def allowlisted() -> dict[str, str]:
    """Mutant id -> why it is equivalent (``id :: reason`` a line; ``#`` starts a comment line)."""
    entries = {}
    for raw in ALLOWLIST.read_text().splitlines() if ALLOWLIST.exists() else []:
        if raw.strip() and not raw.lstrip().startswith("#"):
            mutant_id, _, reason = raw.partition(" :: ")
            entries[mutant_id.strip()] = reason.strip()
    return entries


# -- the test process: the mutant served from memory ----------------------------------------------------


class MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves one module's mutated code; everything else imports as usual."""

    def __init__(self, name: str, path: Path, code) -> None:
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(self.code, module.__dict__)


def mutant_code(spec: str, path: Path):
    """The code a spec names: ``N`` the N-th mutant of ``path``; ``named:K`` issue 30's K-th mutation."""
    if not spec.startswith("named:"):
        return mutated_code(path, int(spec))
    from scripts.mutation_issue30 import NAMED

    _, _, text, replacement = NAMED[int(spec.split(":")[1])]
    source = path.read_text()
    if source.count(text) != 1:
        raise SystemExit(f"stale: the text to replace occurs {source.count(text)} times in {path}")
    return compile(source.replace(text, replacement), str(path), "exec")


#: The test process's exit code when the mutant was not what the tests imported (a bug of this script).
NOT_APPLIED = 99


class ServeMutant:
    """A pytest plugin: puts the finder first once pytest's own import hook is in place (pytest rewrites
    this package's modules, as it ships a pytest plugin), and checks the tests ran the mutant."""

    def __init__(self, finder: MutantFinder) -> None:
        self.finder = finder

    def pytest_configure(self, config) -> None:
        if self.finder.name in sys.modules:
            raise SystemExit(f"{self.finder.name} was imported before the mutant could be served")
        sys.meta_path.insert(0, self.finder)

    def applied(self) -> bool:
        module = sys.modules.get(self.finder.name)
        return module is None or getattr(module.__spec__, "loader", None) is self.finder


def child(path: str, spec: str, pytest_args: list[str]) -> int:
    """Runs the tests against the mutant ``spec`` names in ``path`` (``clean``: the code as it is)."""
    import pytest
    from hypothesis import Phase, settings

    # No shrinking (a failure is all a mutation run needs); set before the test modules build their settings.
    settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], print_blob=False)
    settings.load_profile("mutation")
    sys.dont_write_bytecode = True
    if spec == "clean":
        return int(pytest.main(pytest_args))
    target = Path(path)
    plugin = ServeMutant(MutantFinder(module_name(target), target, mutant_code(spec, target)))
    code = int(pytest.main(pytest_args, plugins=[plugin]))
    return code if plugin.applied() else NOT_APPLIED


# -- the driver ------------------------------------------------------------------------------------------


#: Test processes running now: stopped on Ctrl-C or SIGTERM (``timeout`` in CI), none left behind.
LIVE: set[subprocess.Popen] = set()
STOPPING = threading.Event()


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


@dataclass
class Outcome:
    verdict: str  # killed, survived, timeout, stale
    seconds: float
    by: str = ""  # the first test that failed


def run_tests(path: Path | None, spec: str, timeout: float, tests: list[str]) -> Outcome:
    """Runs ``tests`` (stopping at the first failure) against the mutant ``spec`` names."""
    args = ["-q", "-x", "-n", "0", "-p", "no:cacheprovider", "--noconftest", "--no-header"]
    command = [sys.executable, __file__, "--child", str(path or ""), spec, "--", *args, *tests]
    began = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=out, start_new_session=True)
        LIVE.add(process)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            return Outcome("timeout", time.monotonic() - began)
        finally:
            LIVE.discard(process)
        if STOPPING.is_set():
            raise KeyboardInterrupt
        out.seek(0)
        text = out.read().decode(errors="replace")
    took = time.monotonic() - began
    if "stale: " in text:
        return Outcome("stale", took, text[text.index("stale: ") :].splitlines()[0])
    if code == NOT_APPLIED:
        raise SystemExit(f"the tests did not run the mutant ({path} {spec}): a bug of scripts/mutation.py")
    failed = [line.split()[1] for line in text.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return Outcome(
        "survived" if code == 0 else "killed", took, failed[0] if failed else (f"exit {code}" if code else "")
    )


def clean_timeout(options: argparse.Namespace) -> float | None:
    """The per-mutant timeout, from a run of the tests on the code as it is (which must pass)."""
    clean = run_tests(None, "clean", max(options.timeout, 600.0), options.tests)
    if clean.verdict != "survived":
        print(f"the tests fail without any mutant ({clean.verdict}: {clean.by}): fix them first")
        return None
    timeout = options.timeout or max(120.0, 4 * clean.seconds)
    print(f"clean run: {clean.seconds:.0f}s; {timeout:.0f}s a mutant at most", flush=True)
    return timeout


def run_all(one, items: list, jobs: int) -> list[Outcome]:
    """``one`` over ``items`` in ``jobs`` threads."""
    executor = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        results = list(executor.map(one, items))
    except KeyboardInterrupt:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    return results


def run_named(options: argparse.Namespace) -> int:
    """Issue 30's 13 mutations against ``--tests``: which each kills."""
    from scripts.mutation_issue30 import NAMED

    print(f"issue 30's {len(NAMED)} mutations against {' '.join(options.tests)}")
    timeout = clean_timeout(options)
    if timeout is None:
        return 2

    def one(k: int) -> Outcome:
        label, file, _, _ = NAMED[k]
        outcome = run_tests(REPO / file, f"named:{k}", timeout, options.tests)
        print(f"  {outcome.verdict:8} {outcome.seconds:4.0f}s  {label}  {outcome.by}", flush=True)
        return outcome

    chosen = [k for k, (label, *_) in enumerate(NAMED) if options.only in label]
    results = run_all(one, chosen, options.jobs)
    killed = sum(1 for outcome in results if outcome.verdict in ("killed", "timeout"))
    print(f"\n{killed} of {len(chosen)} killed")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.path.insert(0, str(REPO))  # scripts.mutation_issue30
    if argv[:1] == ["--child"]:
        sep = argv.index("--")
        return child(argv[1], argv[2], argv[sep + 1 :])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=40, help="mutants to run (0: all)")
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--timeout", type=float, default=0.0, help="per mutant (default: 4x the clean run, 120 s at least)"
    )
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 below this score (percent)")
    parser.add_argument("--only", default="", help="run the mutants whose id contains this text")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--named", action="store_true", help="run issue 30's 13 mutations instead")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="the tests to run (default: %(default)s)")
    options = parser.parse_args(argv)
    if options.named:
        return run_named(options)

    allowed = allowlisted()
    everything = [mutant for path in TARGETS for mutant in mutants_of(path)]
    stale = sorted(set(allowed) - {mutant.id for mutant in everything})
    for mutant_id in stale:
        print(f"allow-list entry matches no mutant (the code changed?): {mutant_id}")
    if options.list:
        for mutant in everything:
            print(f"{mutant.where}  {mutant.id}" + ("  [allow-listed]" if mutant.id in allowed else ""))
        return 0
    pool = [mutant for mutant in everything if mutant.id not in allowed and options.only in mutant.id]
    chosen = (
        pool
        if not options.sample or options.sample >= len(pool)
        else random.Random(options.seed).sample(pool, options.sample)
    )
    chosen.sort(key=lambda mutant: (str(mutant.path), mutant.index))
    print(
        f"{len(everything)} mutants in {', '.join(p.name for p in TARGETS)}; {len(allowed) - len(stale)} allow-listed "
        f"as equivalent; running {len(chosen)} (seed {options.seed}) against {' '.join(TESTS)}"
    )

    timeout = clean_timeout(options)
    if timeout is None:
        return 2

    def one(mutant: Mutant) -> Outcome:
        outcome = run_tests(mutant.path, str(mutant.index), timeout, options.tests)
        print(f"  {outcome.verdict:8} {outcome.seconds:4.0f}s  {mutant.where}  {mutant.id}  {outcome.by}", flush=True)
        return outcome

    results = run_all(one, chosen, options.jobs)
    survivors = [mutant for mutant, outcome in zip(chosen, results, strict=True) if outcome.verdict == "survived"]
    killed = len(chosen) - len(survivors)
    score = 100.0 * killed / len(chosen) if chosen else 100.0
    timeouts = sum(1 for outcome in results if outcome.verdict == "timeout")
    print(f"\nscore: {score:.1f}% ({killed} of {len(chosen)} killed, {timeouts} of them by the timeout)")
    if survivors:
        print("surviving mutants (kill each with a test, or allow-list it with the reason it is equivalent):")
        for mutant in survivors:
            print(f"  {mutant.where}  {mutant.id}")
    return 1 if score < options.min_score else 0


def interruptible_main() -> int:
    """``main``; on Ctrl-C or SIGTERM its test processes are stopped (no file was ever changed)."""
    signal.signal(signal.SIGTERM, interrupted)
    try:
        return main()
    except KeyboardInterrupt:
        STOPPING.set()
        for process in list(LIVE):
            stop(process)
        print("interrupted: test processes stopped (no file was changed)", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(interruptible_main())
