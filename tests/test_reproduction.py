"""Reproductions: the committed tables are what their committed records give; a run of the suite is exported
with its curve, compared with the paper's number, and a cell off by more than the tolerance carries measured
diagnostics; runs of other configs and of an uncommitted tree stay out."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.errors import UserError
from bench.runner import execute
from bench.store import Store
from bench.suites import SUITES, DatasetEntry, Suite
from reports.reproduction import (
    REPRODUCTION_DIR,
    REPRODUCTIONS,
    Reproduction,
    Snapshot,
    add_records,
    load_records,
    reproduction_files,
    suite_keys,
    write_reproduction,
)
from tests.conftest import TINY_DATA

TINY_LFF = {**TINY_DATA, "conflict_ratio": 0.01}


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_committed_reproduction_matches_its_records(name: str) -> None:
    rep = REPRODUCTIONS[name]
    for path, text in reproduction_files(rep, load_records(rep)).items():
        committed = REPRODUCTION_DIR / path
        assert committed.exists(), f"{committed} is missing: run python run_bench.py reproduce {name}"
        assert committed.read_text() == text, f"{committed} is stale: run python run_bench.py reproduce {name}"


@pytest.fixture
def tiny_rep(monkeypatch: pytest.MonkeyPatch) -> Reproduction:
    suite = Suite("tiny-nd", "tiny", "fast", ("erm",), (DatasetEntry("cmnist_lff", TINY_LFF),),
                  hparams={"erm": {"epochs": 3, "batch_size": 64, "optimizer": "adam"}}, model="cnn3")
    SUITES.names()  # load the YAML suites first
    monkeypatch.setitem(SUITES._entries, suite.name, suite)
    return Reproduction(name="tiny", title="Tiny", suite="tiny-nd", protocols=("fast",), source="seed 003",
                        selection="iid_val", metrics=("unbiased_acc",), curve_keys=("unbiased_acc", "selectable"),
                        snapshots=(Snapshot("erm: epoch 1", "erm", lambda hp: 1, "erm"),),
                        notes=("A note.",))


def clean(monkeypatch: pytest.MonkeyPatch, git: str) -> None:
    import bench.runner as runner

    real = runner.provenance
    monkeypatch.setattr(runner, "provenance", lambda device: {**real(device), "git": git})


def test_a_suite_run_becomes_a_row_beside_the_paper(tmp_path: Path, tiny_rep: Reproduction,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.suites import get_suite

    clean(monkeypatch, "0123456789ab")
    store_dir = tmp_path / "runs"
    store = Store(store_dir)
    (cfg,) = get_suite("tiny-nd").expand(1, "fast")
    record = execute(cfg, store, torch.device("cpu"), progress=False)
    other = execute(cfg.__class__(**{**cfg.to_dict(), "hparams": {**cfg.hparams, "lr": 0.02}}), store,
                    torch.device("cpu"), progress=False)
    store.close()
    assert record["status"] == other["status"] == "finished"
    assert {cfg.to_dict()["method"]} == {"erm"} and len(suite_keys(tiny_rep)) == 1
    out = tmp_path / "reproductions"
    assert add_records(tiny_rep, store_dir, out) == 1  # the lr=0.02 run is not the suite's
    assert add_records(tiny_rep, store_dir, out) == 1  # adding again replaces, does not duplicate
    records = load_records(tiny_rep, out)
    assert len(records) == 1 and len(records[0]["epochs"]) == 3
    write_reproduction(tiny_rep, out)
    csv = (out / "tiny.csv").read_text().splitlines()
    ours = 100 * record["final"]["iid_val"]["unbiased_acc"]
    row = next(line for line in csv if line.startswith("cmnist_lff,fast,erm,"))
    cells = row.split(",")
    assert cells[4] == f"{ours:.2f}" and cells[5] == "81.73" and cells[6] == f"{ours - 81.73:+.2f}"
    assert cells[7] == "–"  # the baseline itself
    assert "oracle selection" in cells[8] and "last 1 measured selectable epochs" in cells[8]  # far from 81.73
    snap = next(line for line in csv if line.startswith("cmnist_lff,fast,erm: epoch 1,")).split(",")
    first = 100 * records[0]["epochs"][0]["unbiased_acc"]
    assert snap[4] == f"{first:.2f}" and snap[7] == f"{first - ours:+.2f}"  # against the erm row
    curves = (out / "tiny" / "curves.csv").read_text().splitlines()
    assert curves[0] == "run_id,epoch,unbiased_acc,selectable" and len(curves) == 4
    text = (out / "tiny.md").read_text()
    assert "Selection: `iid_val`" in text and "A note." in text and "Device(s): cpu" in text


def test_runs_of_an_uncommitted_tree_are_refused(tmp_path: Path, tiny_rep: Reproduction,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.suites import get_suite

    clean(monkeypatch, "abc+dirty")
    store = Store(tmp_path / "runs")
    execute(get_suite("tiny-nd").expand(1, "fast")[0], store, torch.device("cpu"), progress=False)
    store.close()
    with pytest.raises(UserError, match="uncommitted"):
        add_records(tiny_rep, tmp_path / "runs", tmp_path / "reproductions")
    assert not (tmp_path / "reproductions").exists()


def hand_record(run_id: str, hparams: dict, seed: int, val_ood: float, iid: float) -> dict:
    return {"run_id": run_id, "method": "rrr", "dataset": "objects_on_scenes", "protocol": "cpu", "model": "small_cnn",
            "seed": seed, "config": {"hparams": hparams, "dataset_params": {}},
            "final": {"iid_val": {"val_ood_acc": val_ood, "iid_acc": iid, "epoch": 3}}}


def test_tuning_picks_per_row_by_the_validation_metric_and_shows_the_grid() -> None:
    from reports.reproduction import Tuning, grid_points, grid_table, rows_of

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="x", selection="iid_val",
                       metrics=("iid_acc",), curve_keys=(),
                       tuning=Tuning({"rrr": ("penalty_weight",)}, "val_ood_acc", "tuned on OOD validation"))
    records = [hand_record(f"r{w}-{c}-{s}", {"penalty_weight": w, "mask_control": c}, s, score, 0.9)
               for (w, c, score) in [(10, "none", 0.5), (100, "none", 0.7), (1000, "none", 0.6),
                                     (10, "random", 0.4), (100, "random", 0.3), (1000, "random", 0.2)]
               for s in (0, 1)]
    records[3]["final"]["iid_val"]["val_ood_acc"] = 0.8  # w=100, none, seed 1: mean 0.75
    points = grid_points(rep, records)
    assert len(points) == 6 and all(len(p.runs) == 2 for p in points)
    picked = {(json_rest(p), p.values["penalty_weight"]) for p in points if p.chosen}
    assert picked == {("none", 100), ("random", 10)}  # each row tuned on its own
    assert next(p for p in points if p.chosen and json_rest(p) == "none").score == pytest.approx(75.0)
    rows = rows_of(rep, records)
    labels = sorted(r.label for r in rows)
    assert len(rows) == 2 and all(len(r.runs) == 2 for r in rows)
    assert labels[0].endswith("tuned on OOD validation (val_ood_acc): penalty_weight=100")
    assert labels[1].endswith("penalty_weight=10") and "mask_control=random" in labels[1]
    grid = grid_table(rep, records)
    assert [row[-1] for row in grid.rows].count("yes") == 2 and len(grid.rows) == 6


def json_rest(point) -> str:  # noqa: ANN001
    import json

    return json.loads(point.group[-1])["mask_control"]


def test_mask_control_table_sets_real_masks_against_random_ones() -> None:
    from reports.reproduction import control_table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="x", selection="iid_val",
                       metrics=("iid_acc",), curve_keys=())
    records = [hand_record(f"r-{c}-{s}", {"mask_control": c}, s, 0.5, acc)
               for c, accs in (("none", (0.9, 0.8)), ("random", (0.6, 0.5))) for s, acc in enumerate(accs)]
    table = control_table(rep, records)
    assert table is not None and table.rows == [["objects_on_scenes", "cpu", "rrr", "85.00 ± 7.07", "55.00 ± 7.07",
                                                 "+30.00"]]
    assert control_table(rep, [r for r in records if "none" in r["run_id"]]) is None  # no pair, no table


def test_the_control_table_pairs_rows_that_differ_only_in_the_control() -> None:
    """A variant with other settings (e.g. GAIN with the authors' batch-norm behaviour) is its own pair, not a
    second real-mask side of the default's pair."""
    from reports.reproduction import control_table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="x", selection="iid_val",
                       metrics=("iid_acc",), curve_keys=())
    records = [hand_record(f"r-{c}-{v}", {"mask_control": c, **({"penalty_statistics": v} if v else {})}, 0, 0.5,
                           acc) for c, v, acc in (("none", "", 0.9), ("random", "", 0.5), ("none", "running", 0.7),
                                                  ("random", "running", 0.6))]
    table = control_table(rep, records)
    assert table is not None and [row[2:] for row in table.rows] == [
        ["rrr [penalty_statistics=-]", "90.00", "50.00", "+40.00"],
        ["rrr [penalty_statistics=running]", "70.00", "60.00", "+10.00"]]


def test_the_mask_term_table_reads_the_terms_and_the_mode_ratio_off_the_curves() -> None:
    from reports.guided import mask_term_blocks

    def run(run_id: str, method: str, hparams: dict, epochs: list[dict]) -> dict:
        return {**hand_record(run_id, hparams, 0, 0.5, 0.9), "method": method, "epochs": epochs}

    records = [
        run("erm", "erm", {}, [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "iid_shortcut_relevance": 0.8}]),
        run("isnet", "isnet", {"mask_control": "none"}, [  # the first epoch trains on CE alone
            {"epoch": 1, "train_loss": 0.4, "train_ce": 0.4},
            {"epoch": 2, "train_loss": 1.0, "train_ce": 0.25},
            {"epoch": 3, "train_loss": 0.5, "train_ce": 0.25, "val_loss": 5.0, "iid_shortcut_relevance": 0.6}]),
    ]
    blocks = mask_term_blocks(records)
    rows = blocks[-1].rows
    assert [r[2] for r in rows] == ["erm", "isnet"]  # the reference first
    assert rows[0][4:10] == ["–", "–", "–", "0.5", "0.4", "–"] and rows[0][10] == "80"
    assert rows[1][4:] == ["0.25", "0.75", "0.25", "0.5", "5", "10", "60"]
    assert mask_term_blocks(records[:1]) == []  # no mask-guided run, no table


def test_sweep_export_adds_each_finished_run_to_the_reproduction(tmp_path: Path, tiny_rep: Reproduction,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import bench.provenance
    import reports.reproduction as reproduction
    from run_bench import main

    clean(monkeypatch, "0123456789ab")
    monkeypatch.setattr(bench.provenance, "git_revision", lambda: "0123456789ab")
    monkeypatch.setitem(reproduction.REPRODUCTIONS, "tiny", tiny_rep)
    monkeypatch.setattr(reproduction, "REPRODUCTION_DIR", tmp_path / "reproductions")
    assert main(["sweep", "tiny-nd", "--out", str(tmp_path / "runs"), "--export", "--no-report", "--quiet",
                 "--device", "cpu"]) == 0
    assert len(load_records(tiny_rep, tmp_path / "reproductions")) == 1
    assert (tmp_path / "reproductions" / "tiny.md").exists()
    assert "tiny: 1 finished runs exported" in capsys.readouterr().err


@pytest.mark.parametrize("revision, suite, message", [
    ("abc+dirty", "tiny-nd", "commit your changes"),
    ("0123456789ab", "quick", "no reproduction reports suite quick"),
])
def test_sweep_export_refuses_before_writing(tmp_path: Path, tiny_rep: Reproduction, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], revision: str, suite: str,
                                             message: str) -> None:
    import bench.provenance
    import reports.reproduction as reproduction
    from run_bench import main

    monkeypatch.setattr(bench.provenance, "git_revision", lambda: revision)
    monkeypatch.setitem(reproduction.REPRODUCTIONS, "tiny", tiny_rep)
    assert main(["sweep", suite, "--out", str(tmp_path / "runs"), "--export", "--no-report", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "runs").exists()


def test_teacher_rows_are_shown_and_a_distilled_cell_is_measured_against_its_teacher() -> None:
    from bench.runs import RunConfig
    from reports.paper import load_reference
    from reports.reproduction import table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="Bassi et al. 2024",
                       selection="iid_val", metrics=("ood_acc",), curve_keys=())
    teacher_cfg = RunConfig("teacher", "coloured_mnist", "cpu", 0, "small_cnn", {}, {"strength": 1.0})

    def record(method: str, seed: int, ood: float, **extra: float) -> dict:
        config = {"hparams": {}, "dataset_params": {"strength": 1.0},
                  "teacher": teacher_cfg.to_dict() if method != "teacher" else None}
        run_id = teacher_cfg.run_id if method == "teacher" else f"{method}-{seed}"
        return {"run_id": run_id, "method": method, "dataset": "coloured_mnist", "protocol": "cpu",
                "model": "small_cnn", "seed": seed, "config": config, "meta": {"is_teacher": method == "teacher"},
                "final": {"iid_val": {"ood_acc": ood, "epoch": 2, **extra}}}

    records = [record("teacher", 0, 0.99), record("output_distill", 0, 0.97, ood_agreement=0.975),
               record("output_distill", 1, 0.95, ood_agreement=0.955)]
    rows = {row[2]: row for row in table(rep, records, load_reference()).rows}
    assert set(rows) == {"teacher", "output_distill"}
    assert rows["teacher"][4:7] == ["99.00", "98.7", "+0.30"] and rows["teacher"][-1] == ""
    measured = rows["output_distill"][-1]  # 96.00 ± 1.41 against the paper's 92.6: off by 3.4 points
    assert measured.startswith("ood_acc: ") and "paper at 2.4 seed std from our mean" in measured
    assert "its teacher: 99.00 (ours − teacher -3.00)" in measured
    assert "ood agreement with the teacher: 96.50" in measured


def test_a_cell_without_paper_number_says_when_training_ended_still_moving() -> None:
    from reports.paper import load_reference
    from reports.reproduction import table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="Bassi et al. 2024",
                       selection="iid_val", metrics=("ood_acc",), curve_keys=())

    def record(method: str, curve: list[float]) -> dict:
        epochs = [{"epoch": i + 1, "ood_acc": v, "selectable": True} for i, v in enumerate(curve)]
        return {"run_id": method, "method": method, "dataset": "coloured_mnist", "protocol": "cpu",
                "model": "small_cnn", "seed": 0, "meta": {}, "epochs": epochs,
                "config": {"hparams": {}, "dataset_params": {"strength": 1.0}, "teacher": None},
                "final": {"iid_val": {"ood_acc": curve[-1], "epoch": len(curve)}}}

    rows = {r[2]: r for r in table(rep, [record("attention_distill", [0.40, 0.45, 0.50, 0.55, 0.59]),
                                         record("gradcam_distill", [0.90, 0.95, 0.97, 0.975, 0.976])],
                                   load_reference()).rows}
    assert rows["attention_distill"][-1] == "ood_acc: not converged: last 1 measured selectable epochs +4.00"
    assert rows["gradcam_distill"][-1] == ""  # +0.1 over its last epoch: settled


def test_committed_teachers_are_exported_with_their_weights_and_imported_into_a_new_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runs import RunConfig, make_run_config
    from bench.sweep import run_sweep
    from reports.leaderboard import records_text
    from reports.reproduction import export_teachers, import_teachers, teacher_checkpoint
    from tests.conftest import TINY_DATA, TINY_HP

    clean(monkeypatch, "0123456789ab")
    rep = Reproduction(name="tiny-teach", title="T", suite="quick", protocols=("fast",), source="x",
                       selection="iid_val", metrics=("ood_acc",), curve_keys=("ood_acc",))
    student = make_run_config("output_distill", "coloured_mnist", "fast", 0, {**TINY_HP, "epochs": 1}, TINY_DATA,
                              teacher_hparams={**TINY_HP, "epochs": 1})
    first = tmp_path / "first"
    run_sweep([student], first, "cpu", progress=False)
    teacher_id = RunConfig.from_dict(student.teacher).run_id
    records = [r for r in export_from_store_all(first) if r["run_id"] == teacher_id]
    out = tmp_path / "reproductions"
    (out / rep.name).mkdir(parents=True)
    (out / rep.name / "records.jsonl").write_text(records_text(records))
    assert export_teachers(rep, first, records, out) == [teacher_id]
    weights = teacher_checkpoint(rep, teacher_id, out).read_bytes()
    assert weights == (first / "runs" / teacher_id / "best.pt").read_bytes()

    second = tmp_path / "second"  # a new machine: the teacher comes from the commit, not from training
    assert import_teachers(rep, second, out) == [teacher_id]
    assert import_teachers(rep, second, out) == []  # already there
    imported = Store(second).get(teacher_id)
    assert imported["status"] == "finished" and imported["provenance"] == records[0]["provenance"]
    assert len(Store(second).epochs(teacher_id)) == len(records[0]["epochs"])
    run_sweep([student.__class__(**{**student.to_dict(), "seed": 1})], second, "cpu", progress=False)
    assert Store(second).get(teacher_id)["updated_at"] == imported["updated_at"]  # not trained again
    learnt = [r for r in Store(second).runs() if r["method"] == "output_distill"][0]
    first_student = Store(first).get(student.run_id)
    assert learnt["meta"]["teacher_sha256"] == first_student["meta"]["teacher_sha256"]


def export_from_store_all(folder: Path) -> list[dict]:
    from reports.leaderboard import RECORD_KEYS

    store = Store(folder, create=False)
    try:
        return [{**{k: run.get(k) for k in RECORD_KEYS}, "epochs": store.epochs(run["run_id"])}
                for run in store.runs("finished")]
    finally:
        store.close()


def test_teacher_table_says_whether_each_student_learnt_from_the_committed_teacher(tmp_path: Path) -> None:
    from bench.runner import weights_digest
    from bench.runs import RunConfig, make_run_config
    from reports.blocks import Table
    from reports.teachers import teacher_blocks

    student = make_run_config("output_distill", "coloured_mnist", "fast", 0, {"epochs": 1}, TINY_DATA)
    teacher_id = RunConfig.from_dict(student.teacher).run_id
    model = torch.nn.Linear(3, 2)
    torch.save({"model": model.state_dict()}, tmp_path / f"{teacher_id}.pt")
    other = torch.nn.Linear(3, 2)

    def record(seed: int, meta: dict) -> dict:
        return {"method": "output_distill", "dataset": "coloured_mnist", "seed": seed, "config": student.to_dict(),
                "meta": meta}

    records = [record(0, {"teacher_sha256": weights_digest(model)}),
               record(1, {"teacher_sha256": weights_digest(other)}), record(2, {}),
               {"method": "teacher", "dataset": "coloured_mnist", "seed": 0, "config": {}}]
    table = next(b for b in teacher_blocks(records, lambda run_id: tmp_path / f"{run_id}.pt") if isinstance(b, Table))
    assert [row[4] for row in table.rows] == ["yes", "no: another training of the same teacher config",
                                              "not recorded (the run predates teacher digests)"]
    missing = teacher_blocks(records[:1], lambda run_id: tmp_path / "absent.pt")
    assert next(b for b in missing if isinstance(b, Table)).rows[0][4] == "no committed weights to compare"
    assert teacher_blocks(records[3:], lambda run_id: tmp_path / "absent.pt") == []


def test_the_header_states_the_share_of_evaluation_in_the_run_time() -> None:
    from reports.blocks import markdown
    from reports.reproduction import blocks

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="x", selection="iid_val",
                       metrics=("iid_acc",), curve_keys=())
    records = [{**hand_record(f"r{s}", {}, s, 0.5, 0.9), "method": "erm",
                "cost": {"train_seconds": 30.0, "eval_seconds": 10.0 * s, "wall_seconds": 45.0}} for s in (1, 2)]
    from reports.paper import load_reference

    text = markdown(blocks(rep, records, load_reference()))
    assert "evaluation (every split, validation loss, explanation probe) 33 % of training plus evaluation" in text


def test_tuned_real_and_random_rows_pair_whatever_value_each_picked() -> None:
    from reports.reproduction import Tuning, control_table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="x", selection="iid_val",
                       metrics=("iid_acc",), curve_keys=(),
                       tuning=Tuning({"rrr": ("penalty_weight",)}, "val_ood_acc", "tuned on OOD validation"))
    records = [hand_record(f"r{w}-{c}", {"penalty_weight": w, "mask_control": c}, 0, score, acc)
               for w, c, score, acc in [(10, "none", 0.7, 0.9), (100, "none", 0.5, 0.8),
                                        (10, "random", 0.4, 0.6), (100, "random", 0.6, 0.5)]]
    table = control_table(rep, records)
    assert table is not None and table.rows == [["objects_on_scenes", "cpu", "rrr", "90.00", "50.00", "+40.00"]]


def test_a_method_takes_the_paper_row_its_reproduction_maps_it_to() -> None:
    """On DogsWithTies the paper's GALS row is CLIP-attention GALS, run here as ``gals_teacher``; the
    mask-attention ``gals`` is N/A there and gets no paper number."""
    from reports.paper import load_reference
    from reports.reproduction import table

    rep = Reproduction(name="t", title="T", suite="quick", protocols=("cpu",), source="Bassi et al. 2024",
                       selection="iid_val", metrics=("ood_acc",), curve_keys=(),
                       paper_rows={"gals_teacher": "gals", "gals": ""})

    def record(method: str) -> dict:
        return {"run_id": method, "method": method, "dataset": "dogs_with_ties", "protocol": "cpu",
                "model": "small_cnn", "seed": 0, "meta": {}, "config": {"hparams": {}, "dataset_params": {},
                                                                         "teacher": None},
                "final": {"iid_val": {"ood_acc": 0.5, "epoch": 1}}}

    rows = {r[2]: r for r in table(rep, [record("gals_teacher"), record("gals")], load_reference()).rows}
    assert rows["gals_teacher"][4:7] == ["50.00", "73.3", "-23.30"]
    assert rows["gals"][4:7] == ["50.00", "–", "–"]
