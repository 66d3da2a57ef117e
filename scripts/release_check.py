"""Release check: what someone who installs the package from an index gets, tried from the built
artifacts, never from the source tree.

1. Build the sdist and the wheel (``python -m build``) and run ``twine check --strict`` on both.
2. Read the artifacts: the licence metadata and files, no development extras, no pytest plugin
   registered on install, every file of the package in the wheel (the example DAGs too), every file
   of ``tests/`` in the sdist (their JSON too).
3. Install the wheel into a fresh venv, in a directory outside the repository.
4. ``airflow providers list`` there lists the provider.
5. The installed ``openhands-emulator`` serves, and one example DAG of the installed package runs to
   success with ``dag.test()`` against it.
6. Tests run from the unpacked sdist, in that venv with ``requirements/dev.txt``: a selection that
   reads the sdist's JSON (the OpenAPI documents, the real server's samples), the example DAGs and
   the pytest plugin (the whole suite runs from the repository in CI's first step).

Run from the repository root with the development venv (it has ``build`` and ``twine``)::

    .venv/bin/python scripts/release_check.py

It exits non-zero naming what failed, and stops what it started; ``--keep`` keeps its temporary
directory (artifacts, venv, Airflow home) for a look.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIST_NAME = "airflow-provider-openhands"
PACKAGE = "airflow_provider_openhands"
#: The example the check runs: start, a deferrable sensor, a report task.
EXAMPLE_FILE, EXAMPLE_DAG = "openhands_readme_check.py", "openhands_readme_check"
DEVELOPMENT_EXTRAS = {"test", "bench", "production"}
#: Run from the unpacked sdist (step 6).
SDIST_TESTS = [
    "tests/test_contract.py",
    "tests/contract/test_v1_contract.py",
    "tests/test_example_dags.py::test_every_example_loads_without_import_errors",
    "tests/test_pytest_plugin.py",
]

#: Run by the fresh venv's Python: the example DAG from the installed package, with dag.test().
RUN_EXAMPLE = """
import json, runpy, sys
from pathlib import Path
import airflow_provider_openhands.example_dags as examples

path = Path(examples.__path__[0]) / sys.argv[1]
assert path.resolve().is_relative_to(Path(sys.prefix).resolve()), f"not the installed package: {path}"
dag = next(v for v in runpy.run_path(str(path)).values() if getattr(v, "dag_id", None) == sys.argv[2])
run = dag.test(run_conf={"repository": "acme/docs"})
value = lambda state: str(getattr(state, "value", state))
states = {ti.task_id: value(ti.state) for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"file": str(path), "state": value(run.state), "tasks": states}))
"""


class CheckFailed(Exception):
    """A step of the release check that did not hold; its message says which and why."""


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run a command; its output, or CheckFailed with the command's output on a non-zero exit."""
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise CheckFailed(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}")
    return done.stdout


def clean_copy(home: Path) -> Path:
    """The repository's files as a fresh checkout has them (tracked or new, not ignored), working-tree
    edits included: a build here reads no leftover ``*.egg-info`` whose file list would fill the sdist."""
    listed = run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"]).splitlines()
    source = home / "source"
    for name in listed:
        origin = REPO / name
        if origin.exists() or origin.is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name, follow_symlinks=False)
    return source


def build(home: Path) -> tuple[Path, Path]:
    step("build the sdist and the wheel (from a clean copy of the repository)")
    dist = home / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(clean_copy(home))])
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    print(f"{sdist.name} ({sdist.stat().st_size // 1024} KiB), {wheel.name} ({wheel.stat().st_size // 1024} KiB)")
    step("twine check --strict")
    print(run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)]).strip())
    return sdist, wheel


def tracked(folder: str) -> set[str]:
    """The files git tracks under ``folder`` (what the artifacts must carry)."""
    return set(run(["git", "-C", str(REPO), "ls-files", folder]).split())


def wheel_problems(wheel: Path) -> list[str]:
    """What an index user would miss, or get unasked, in the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    problems = []
    if "License-Expression: Apache-2.0" not in metadata.splitlines():
        problems.append("METADATA has no License-Expression: Apache-2.0")
    for name in ("LICENSE", "NOTICE"):
        if f"License-File: {name}" not in metadata.splitlines() or f"{info}/licenses/{name}" not in names:
            problems.append(f"{name} is not a licence file of the wheel")
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    if extras & DEVELOPMENT_EXTRAS:
        problems.append(f"development extras published as features: {sorted(extras & DEVELOPMENT_EXTRAS)}")
    if "[pytest11]" in entry_points:
        problems.append("a pytest11 entry point loads a plugin into every pytest session of the user's")
    if "[apache_airflow_provider]" not in entry_points:
        problems.append("no apache_airflow_provider entry point: Airflow would not find the provider")
    missing = sorted(p for p in tracked(PACKAGE) if p.endswith(".py") and p not in names)
    if missing:
        problems.append(f"package files missing from the wheel: {missing}")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    """The sdist carries its tests, and what they read, and the licence."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        names = {n[len(root) + 1 :] for n in archive.getnames()}
    wanted = tracked("tests") | tracked(PACKAGE) | {"LICENSE", "NOTICE", "CHANGELOG.md", *tracked("requirements")}
    missing = sorted(wanted - names)
    return [f"files missing from the sdist: {missing}"] if missing else []


def fresh_venv(home: Path, wheel: Path) -> Path:
    step("install the wheel into a fresh venv (not the source tree)")
    venv = home / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    started = time.monotonic()
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=home, timeout=1200)
    shown = run([str(venv / "bin" / "pip"), "show", DIST_NAME], cwd=home)
    location = next(line for line in shown.splitlines() if line.startswith("Location:"))
    print(f"installed in {time.monotonic() - started:.0f} s; {location}")
    return venv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def installed_emulator(venv: Path, home: Path) -> Iterator[str]:
    """The venv's ``openhands-emulator`` command, serving until the block ends; its URL."""
    port = free_port()
    log = (home / "emulator.log").open("w")
    command = [str(venv / "bin" / "openhands-emulator"), "--port", str(port), "--conversation-seconds", "2"]
    if not Path(command[0]).exists():
        raise CheckFailed("the wheel installs no openhands-emulator command")
    process = subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/_emulator/stats", timeout=2).read()
                break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    said = (home / "emulator.log").read_text()
                    raise CheckFailed(f"openhands-emulator did not serve ({exc}): {said}") from exc
                time.sleep(0.2)
        print(f"{' '.join(command[-4:])}: serving on {url}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def airflow_env(venv: Path, home: Path) -> dict[str, str]:
    """A private Airflow home whose DAG folder (and Airflow 3 DAG bundle) is the installed examples."""
    python = str(venv / "bin" / "python")
    examples = run([python, "-c", f"import {PACKAGE}.example_dags as e; print(e.__path__[0])"], cwd=home).strip()
    bundle = {"name": "openhands_examples", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
    bundle["kwargs"] = {"path": examples, "refresh_interval": 0}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    return {
        **env,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": examples,
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
    }


def providers_list(venv: Path, home: Path, env: dict[str, str]) -> None:
    step("airflow db migrate; airflow providers list")
    airflow = str(venv / "bin" / "airflow")
    run([airflow, "db", "migrate"], env=env, cwd=home)
    run([airflow, "pools", "set", "openhands", "10", "OpenHands", "--include-deferred"], env=env, cwd=home)
    listed = run([airflow, "providers", "list"], env=env, cwd=home)
    ours = [line for line in listed.splitlines() if DIST_NAME in line]
    if not ours:
        raise CheckFailed(f"`airflow providers list` does not list {DIST_NAME}:\n{listed}")
    print("\n".join(line.strip() for line in ours))


def run_example(venv: Path, home: Path, env: dict[str, str]) -> None:
    step(f"dag.test() of the installed {EXAMPLE_FILE} against the installed openhands-emulator")
    with installed_emulator(venv, home) as url:
        connection = {"conn_type": "openhands", "host": url, "password": "emulator-api-key"}
        env = {**env, "AIRFLOW_CONN_OPENHANDS_DEFAULT": json.dumps(connection), "OPENHANDS_EXAMPLE_POLL_SECONDS": "0.5"}
        out = run([str(venv / "bin" / "python"), "-c", RUN_EXAMPLE, EXAMPLE_FILE, EXAMPLE_DAG], env=env, cwd=home)
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[len("RESULT ") :])
        stats = json.loads(urllib.request.urlopen(f"{url}/_emulator/stats", timeout=5).read())
    print(f"{result['file']}: run {result['state']}, tasks {result['tasks']}")
    print(f"emulator: {json.dumps(stats, sort_keys=True)[:300]}")
    if result["state"] != "success" or set(result["tasks"].values()) != {"success"}:
        raise CheckFailed(f"the example DAG did not succeed: {result}")
    if stats["created"] != 1:
        raise CheckFailed(f"the example DAG's conversation did not reach the emulator: {stats}")


def sdist_tests(venv: Path, home: Path, sdist: Path) -> None:
    step("tests from the unpacked sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(home / "unpacked", filter="data")
    (root,) = (home / "unpacked").iterdir()
    run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(root / "requirements" / "dev.txt")], cwd=home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *SDIST_TESTS]
    out = run(command, env=env, cwd=root, timeout=600)
    print(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/release_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and print its path")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="openhands-release-check-"))
    started = time.monotonic()
    try:
        sdist, wheel = build(home)
        step("the artifacts' contents")
        problems = wheel_problems(wheel) + sdist_problems(sdist)
        if problems:
            raise CheckFailed("\n".join(problems))
        print("licence metadata and files, entry points, extras, package files (wheel), tests and JSON (sdist): ok")
        venv = fresh_venv(home, wheel)
        env = airflow_env(venv, home)
        providers_list(venv, home, env)
        run_example(venv, home, env)
        sdist_tests(venv, home, sdist)
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"\nRELEASE CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nkept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(f"\nRELEASE CHECK PASSED in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
