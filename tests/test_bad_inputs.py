"""Bad input, whatever it is: one `error:` line naming the fix, exit code 2, and nothing created or changed on
disk (no folder, no store, not a byte of an existing file)."""
from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bench.data
import bench.perf
import bench.runner
import bench.suites
import bench.sweep
from bench.config import canonical_json
from bench.data import DATASETS, list_datasets
from bench.method import get_method, list_methods
from bench.protocols import list_protocols
from bench.registry import Registry
from bench.runs import MAX_SEED
from bench.store import APPLICATION_ID, STORE_FILENAME, Store
from run_bench import main

RUN = ["run", "--method", "erm", "--dataset", "coloured_mnist", "--device", "cpu", "--quiet"]
LONG = "x" * 300
Setup = Callable[[Path], list[str]]


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every input here is bad: reaching the runner or the data fails the test at once (instead of training or
    timing for minutes). Relative paths land in ``tmp_path``, which the snapshots cover."""
    def reached(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bad input got past the checks")

    for module, name in [(bench.runner, "execute"), (bench.sweep, "run_one"), (bench.sweep, "_run_processes"),
                         (bench.data, "load_dataset"), (bench.perf, "load_dataset")]:
        monkeypatch.setattr(module, name, reached)
    monkeypatch.chdir(tmp_path)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None: a folder)."""
    gc.collect()  # closes the connections of stores the failed command dropped (and their -wal/-shm files)
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one error line of ``main(argv)``, after checking the contract's form."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]


# --- the states of disk a case starts from ----------------------------------------------------------------
def a_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("not a folder\n")
    return path


def read_only_folder(tmp: Path, with_store: bool = False) -> Path:
    folder = tmp / "read-only"
    if with_store:
        Store(folder).close()
    else:
        folder.mkdir()
    folder.chmod(0o555)
    return folder


def read_only_store(tmp: Path) -> Path:
    Store(tmp / "out").close()
    (tmp / "out" / STORE_FILENAME).chmod(0o444)
    return tmp / "out"


def foreign_database(tmp: Path, sql: str = "CREATE TABLE notes (x); INSERT INTO notes VALUES ('mine');") -> Path:
    (tmp / "out").mkdir()
    conn = sqlite3.connect(tmp / "out" / STORE_FILENAME)
    conn.executescript(sql)
    conn.close()
    return tmp / "out"


def empty_store_file(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    (tmp / "out" / STORE_FILENAME).touch()
    return tmp / "out"


def damaged_store(tmp: Path, column: str = "config", value: str = "{bad") -> Path:
    store = Store(tmp / "out")
    store.ensure_run("r1", {"method": "erm", "dataset": "coloured_mnist", "protocol": "fast", "seed": 0,
                            "model": "small_cnn"})
    store._conn.execute(f"UPDATE runs SET {column} = ?", (value,))
    store.close()
    return tmp / "out"


def case(setup: Setup, needle: str, name: str) -> Any:
    return pytest.param(setup, needle, id=name)


CASES = [
    # 1. seeds out of range
    case(lambda t: [*RUN, "--seed", str(2**70), "--out", str(t / "out")], "seed must be an integer", "seed-2**70"),
    case(lambda t: [*RUN, "--seed", str(2**63), "--out", str(t / "out")], "seed must be an integer", "seed-2**63"),
    case(lambda t: [*RUN, "--seed", str(MAX_SEED + 1), "--out", str(t / "out")], "seed", "seed-max+1"),
    case(lambda t: [*RUN, "--seed", "-1", "--out", str(t / "out")], "seed", "seed-negative"),
    case(lambda t: ["datasets", "card", "mnist_sc", "--seed", str(2**64)], "seed", "datasets-seed"),
    # 2. --out at a file, or under one
    case(lambda t: [*RUN, "--out", str(a_file(t))], "is a file, not a folder", "out-is-a-file"),
    case(lambda t: [*RUN, "--out", str(a_file(t) / "sub")], "is a file, not a folder", "out-under-a-file"),
    case(lambda t: ["report", "--out", str(a_file(t) / "sub")], "is a file, not a folder", "report-under-a-file"),
    case(lambda t: ["sweep", "quick", "--out", str(a_file(t))], "is a file, not a folder", "sweep-out-is-a-file"),
    case(lambda t: ["datasets", "show", "mnist_sc", "--out", str(a_file(t))], "not a folder", "datasets-out-file"),
    # 3. 300-character names
    case(lambda t: ["run", "--method", LONG, "--dataset", "coloured_mnist", "--out", str(t / "out")],
         "unknown method 'xxx", "long-method"),
    case(lambda t: ["run", "--method", "erm", "--dataset", LONG, "--out", str(t / "out")],
         "unknown dataset 'xxx", "long-dataset"),
    case(lambda t: [*RUN, "--protocol", LONG, "--out", str(t / "out")], "unknown protocol 'xxx", "long-protocol"),
    case(lambda t: [*RUN, "--model", LONG, "--out", str(t / "out")], "unknown model 'xxx", "long-model"),
    case(lambda t: ["sweep", LONG, "--out", str(t / "out")], "unknown suite 'xxx", "long-suite"),
    case(lambda t: [*RUN, "--hp", f"{LONG}=1", "--out", str(t / "out")], "unknown erm hyper-parameter", "long-hp"),
    case(lambda t: [*RUN, "--out", str(t / LONG)], "File name too long", "long-out"),
    case(lambda t: ["report", "--out", str(t / LONG)], "File name too long", "report-long-out"),
    # 4. read-only folder and store (chmod: root ignores it, the store still refuses)
    case(lambda t: [*RUN, "--out", str(read_only_folder(t))], "is read-only; make it writable", "ro-folder"),
    case(lambda t: [*RUN, "--out", str(read_only_folder(t) / "new")], "is read-only", "ro-parent"),
    case(lambda t: [*RUN, "--out", str(read_only_folder(t, with_store=True))], "is read-only", "ro-folder-store"),
    case(lambda t: ["report", "--out", str(read_only_folder(t, with_store=True))], "is read-only", "report-ro"),
    case(lambda t: [*RUN, "--out", str(read_only_store(t))], "store", "ro-store-file"),
    # 5. another program's SQLite database
    case(lambda t: [*RUN, "--out", str(foreign_database(t))], "is not a shortcut-bench store", "foreign-db"),
    case(lambda t: ["report", "--out", str(foreign_database(t))], "is not a shortcut-bench store", "report-foreign"),
    case(lambda t: [*RUN, "--out", str(foreign_database(t, "PRAGMA application_id = 42; CREATE TABLE runs (x);"))],
         "is not a shortcut-bench store", "foreign-application-id"),
    case(lambda t: [*RUN, "--out", str(foreign_database(t, "CREATE TABLE runs (id, name);"))],
         "is not a shortcut-bench store", "foreign-runs-table"),
    # 6. a damaged record
    case(lambda t: ["report", "--out", str(damaged_store(t))], "run r1 (config) holds invalid JSON", "bad-json"),
    case(lambda t: ["sweep", "quick", "--out", str(damaged_store(t))], "run r1 (config)", "sweep-bad-json"),
    case(lambda t: ["report", "--out", str(damaged_store(t, "final", "[1, 2]"))], "not a JSON object",
         "json-not-object"),
    # 7. workers
    case(lambda t: ["sweep", "quick", "--workers", "-1", "--out", str(t / "out")], "--workers must be >= 1",
         "workers-negative"),
    case(lambda t: ["sweep", "quick", "--executor", "processes", "--workers", "0", "--out", str(t / "out")],
         "--workers must be >= 1", "workers-0"),
    case(lambda t: ["sweep", "quick", "--seeds", str(10**12), "--out", str(t / "out")], "--seeds must be <=",
         "seeds-huge"),
    # 7b. cluster sweeps and shards
    case(lambda t: ["sweep", "quick", "--executor", "submitit-local", "--slurm", "partitio=gpu",
                    "--out", str(t / "out")], "unknown Slurm option 'partitio'", "slurm-unknown-key"),
    case(lambda t: ["sweep", "quick", "--executor", "submitit-local", "--slurm", "time_min=soon",
                    "--out", str(t / "out")], "must be a whole number", "slurm-bad-number"),
    case(lambda t: ["sweep", "quick", "--executor", "slurm", "--slurm-config", str(t / "missing.yaml"),
                    "--out", str(t / "out")], "cannot read Slurm config", "slurm-missing-config"),
    case(lambda t: ["sweep", "quick", "--executor", "slurm", "--out", str(t / "out")], "sbatch not found",
         "slurm-no-sbatch"),
    case(lambda t: ["merge", "--out", str(t / "out")], "no shards under", "merge-no-shards"),
    case(lambda t: ["sweep", "quick", "--max-hours", "-1", "--out", str(t / "out")], "--max-hours must be a positive",
         "max-hours-negative"),
    # 8. a 0-byte store file
    case(lambda t: [*RUN, "--out", str(empty_store_file(t))], "is an empty file, not a store", "empty-store"),
    case(lambda t: ["report", "--out", str(empty_store_file(t))], "is an empty file", "report-empty-store"),
    # 9. non-finite numbers
    *[case(lambda t, option=option: [*RUN, *option, "--out", str(t / "out")], "must be a finite number", option[1])
      for option in (["--hp", "lr=nan"], ["--hp", "weight_decay=inf"], ["--hp", "grad_clip=-inf"],
                     ["--hp", "momentum=NaN"], ["--hp", "lr=1e999"], ["--data", "strength=nan"],
                     ["--data", "strength=-Infinity"])],
    case(lambda t: ["run", "--method", "kd", "--dataset", "coloured_mnist", "--hp", "temperature=inf",
                    "--out", str(t / "out")], "must be a finite number", "kd-temperature-inf"),
    case(lambda t: ["run", "--method", "kd", "--dataset", "coloured_mnist", "--teacher-hp", "lr=nan",
                    "--out", str(t / "out")], "must be a finite number", "teacher-lr-nan"),
    case(lambda t: [*RUN, "--hp", "epochs=inf", "--out", str(t / "out")], "must be a number (int)", "epochs-inf"),
    # 10. absurd sizes
    case(lambda t: [*RUN, "--hp", f"epochs={10**12}", "--out", str(t / "out")], "epochs must be in", "epochs-huge"),
    case(lambda t: [*RUN, "--hp", f"batch_size={10**9}", "--out", str(t / "out")], "batch_size must be in",
         "batch-size-huge"),
    # 11. perf batch size
    case(lambda t: ["perf", "--batch-size", "0", "--device", "cpu"], "--batch-size must be from 1", "perf-batch-0"),
    case(lambda t: ["perf", "--batch-size", "-5", "--device", "cpu"], "--batch-size must be from 1", "perf-batch-neg"),
    # 12. an empty --out
    case(lambda t: [*RUN, "--out", ""], "argument --out: needs a folder name", "out-empty"),
    case(lambda t: ["report", "--out", ""], "argument --out: needs a folder name", "report-out-empty"),
    case(lambda t: ["sweep", "quick", "--out", ""], "argument --out: needs a folder name", "sweep-out-empty"),
]


@pytest.mark.parametrize("setup,needle", CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          setup: Setup, needle: str) -> None:
    argv = setup(tmp_path)
    before = snapshot(tmp_path)
    line = refused(capsys, argv)
    assert needle in line
    assert snapshot(tmp_path) == before


# --- 13. a malformed suite file fails alone -----------------------------------------------------------------
@pytest.fixture
def suite_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A suites folder holding the quick suite and three malformed files."""
    folder = tmp_path / "suites"
    folder.mkdir()
    shutil.copy(bench.suites.SUITE_DIR / "quick.yaml", folder)
    (folder / "broken.yaml").write_text("name: broken\nprotocol: [fast\nmethods: erm: x\n")
    (folder / "list.yaml").write_text("- a list, not a mapping\n")
    (folder / "nodata.yaml").write_text("name: nodata\nprotocol: fast\nmethods: [erm]\n")
    monkeypatch.setattr(bench.suites, "SUITE_DIR", folder)
    monkeypatch.setattr(bench.suites, "SUITES", Registry("suite", loader=bench.suites._load_yaml_suites))
    return folder


def test_a_malformed_suite_fails_only_when_asked_for(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      suite_dir: Path) -> None:
    assert main(["list", "suites"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["quick", "broken", "list", "nodata"]
    assert "BROKEN: suite file" in lines[1] and "broken.yaml" in lines[1] and "line 3, column 8" in lines[1]
    assert "missing key 'datasets'" in lines[3]
    before = snapshot(tmp_path)
    line = refused(capsys, ["sweep", "broken", "--out", str(tmp_path / "out")])
    assert f"suite file {suite_dir / 'broken.yaml'} is malformed" in line
    assert snapshot(tmp_path) == before
    assert bench.suites.get_suite("quick").expand()  # the others keep working


# --- what is (and is not) a store ----------------------------------------------------------------------------
def test_a_new_store_carries_the_marker_and_nothing_else_is_left(tmp_path: Path) -> None:
    Store(tmp_path / "out").close()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [STORE_FILENAME]
    header = (tmp_path / "out" / STORE_FILENAME).read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID


def test_a_store_of_the_first_schema_is_accepted_and_marked(tmp_path: Path) -> None:
    foreign_database(tmp_path, """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, method TEXT NOT NULL, dataset TEXT NOT NULL,
            protocol TEXT NOT NULL, seed INTEGER NOT NULL, model TEXT NOT NULL, config TEXT NOT NULL,
            status TEXT NOT NULL, error TEXT, owner TEXT, final TEXT, cost TEXT, provenance TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE epochs (run_id TEXT NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
            PRIMARY KEY (run_id, epoch));
        INSERT INTO runs VALUES ('old', 'erm', 'coloured_mnist', 'fast', 0, 'small_cnn', '{"seed": 0}', 'failed',
            'why', NULL, NULL, NULL, NULL, 1.0, 1.0);
    """)
    store = Store(tmp_path / "out")
    assert store.get("old")["config"] == {"seed": 0}  # type: ignore[index]
    assert store._conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert {"code", "meta"} <= {row["name"] for row in store._conn.execute("PRAGMA table_info(runs)")}
    store.close()


def test_readers_leave_a_marked_store_alone(tmp_path: Path) -> None:
    Store(tmp_path).close()
    before = snapshot(tmp_path)
    Store(tmp_path, create=False).close()
    assert snapshot(tmp_path) == before


def test_nothing_non_json_is_ever_stored() -> None:
    with pytest.raises(ValueError):
        canonical_json({"lr": float("nan")})


# --- property: hostile `run` arguments ------------------------------------------------------------------------
NON_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e999", "-1e999"]
METHODS, DATASETS_, PROTOCOLS = list_methods(), list_datasets(), list_protocols()
HP_KEYS = set().union(*({f.name for f in dataclasses.fields(get_method(m).Hparams)} for m in METHODS))
DATA_KEYS_OF = {d: {f.name for f in dataclasses.fields(DATASETS.get(d).Config)} for d in DATASETS_}
DATA_KEYS = set().union(*DATA_KEYS_OF.values())
FLOAT_HPS = ["lr", "momentum", "weight_decay", "grad_clip"]  # every method's, through TrainHparams


def _is_seed(text: str) -> bool:
    try:
        return 0 <= int(text) <= MAX_SEED
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unknown(names: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=30), st.just(""), st.just(LONG), st.just("é" * 300)).filter(
        lambda name: name not in names)


def unknown_key(known: set[str]) -> st.SearchStrategy[str]:
    return st.text(max_size=20).filter(lambda key: "=" not in key and key.strip() not in known)


BAD: dict[str, st.SearchStrategy[Any]] = {
    "method": unknown(METHODS),
    "dataset": unknown(DATASETS_),
    "protocol": unknown(PROTOCOLS),
    "seed": st.one_of(st.integers(max_value=-1).map(str), st.integers(min_value=MAX_SEED + 1).map(str),
                      st.sampled_from(NON_FINITE + ["", "1.5", "1e3", "0x10", "seven"]),
                      st.text(max_size=20).filter(lambda text: not _is_seed(text))),
    "hp": st.one_of(st.tuples(st.sampled_from(FLOAT_HPS), st.sampled_from(NON_FINITE)),
                    st.tuples(st.sampled_from(FLOAT_HPS), st.text(max_size=20).filter(lambda v: not _is_number(v))),
                    st.tuples(st.sampled_from(["epochs", "batch_size"]), st.integers(min_value=10**6 + 1).map(str)),
                    st.tuples(unknown_key(HP_KEYS), st.text(max_size=10))),
    "data": st.one_of(st.tuples(st.just("strength"), st.sampled_from(NON_FINITE)),
                      st.tuples(unknown_key(DATA_KEYS), st.text(max_size=10))),
}
VALID: dict[str, st.SearchStrategy[Any]] = {
    "method": st.sampled_from(METHODS),
    "dataset": st.sampled_from(DATASETS_),
    "protocol": st.sampled_from(PROTOCOLS),
    "seed": st.integers(0, MAX_SEED).map(str),
    "hp": st.lists(st.sampled_from([("lr", "0.05"), ("momentum", "0.5"), ("grad_clip", "2")]), max_size=2),
    "data": st.just([]),
}
WITH_STRENGTH = [name for name in DATASETS_ if "strength" in DATA_KEYS_OF[name]]


@st.composite
def bad_run(draw: st.DrawFn) -> list[str]:
    """``run`` arguments where one or two components are hostile (invalid whatever the others) and the rest
    valid, so that each check must catch its own component."""
    broken = draw(st.sets(st.sampled_from(sorted(BAD)), min_size=1, max_size=2))
    parts = {name: draw(BAD[name] if name in broken else VALID[name]) for name in VALID}
    if "data" in broken and "dataset" not in broken:
        parts["dataset"] = draw(st.sampled_from(WITH_STRENGTH))  # a bad value of an option it has
    for name in broken & {"hp", "data"}:
        parts[name] = [*draw(VALID[name]), parts[name]]  # the bad one last: a later value of its key would win
    return ["run", f"--method={parts['method']}", f"--dataset={parts['dataset']}",
            f"--protocol={parts['protocol']}", f"--seed={parts['seed']}", "--device=cpu",
            *[f"--hp={key}={value}" for key, value in parts["hp"]],
            *[f"--data={key}={value}" for key, value in parts["data"]]]


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(argv=bad_run())
def test_hostile_run_arguments_are_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       argv: list[str]) -> None:
    out = tmp_path / "hostile-out"
    refused(capsys, [*argv, f"--out={out}"])
    assert not out.exists()
    assert not os.path.exists(tmp_path / STORE_FILENAME)
