"""What the label-only methods inferred about the bias, generated from their runs' epoch metrics.

JTT, LfF, DFA, DCWP and the ``*_inferred`` group methods each decide which training samples are the minority
(bias-conflicting) without seeing the groups; the runner scores that set against the dataset's groups
(``mined_share``, ``mined_precision``, ``mined_recall``, ``train_conflicting_share``: ``bench.metrics.mining_metrics``).
A method far from its paper's number is often explained here: it mined the wrong samples, or too few.
"""
from __future__ import annotations

from typing import Any

from reports.blocks import Block, Heading, Para, Table

KEYS = ("mined_share", "mined_precision", "mined_recall", "train_conflicting_share")


def last_mined(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's last epoch row that scores a mined set, if any."""
    rows = [e for e in run.get("epochs") or [] if all(k in e for k in KEYS)]
    return rows[-1] if rows else None


def mining_blocks(records: list[dict[str, Any]]) -> list[Block]:
    """One row per run that mined a minority: what it mined at the end of training against the true groups."""
    runs = sorted((r for r in records if last_mined(r)),
                  key=lambda r: (r["dataset"], sorted(r["config"]["dataset_params"].items()), r["method"], r["seed"]))
    if not runs:
        return []
    varying = sorted({k for r in runs for k, v in r["config"]["dataset_params"].items()
                      if any(o["config"]["dataset_params"].get(k) != v for o in runs)})
    body = []
    for run in runs:
        row = last_mined(run)
        assert row is not None
        params = ", ".join(f"{k} {run['config']['dataset_params'][k]}" for k in varying)
        body.append([f"{run['dataset']}{f' ({params})' if params else ''}", run["method"], str(run["seed"]),
                     str(row["epoch"])] + [f"{100 * row[k]:.1f}" for k in KEYS])
    return [Heading(2, "What the label-only methods mined"), Para(
        "Each label-only method picks the training samples it treats as the minority (JTT: its identification "
        "model's errors; LfF and DFA: the samples whose relative-difficulty weight is above 1/2; DCWP: its "
        "pseudo-conflicting samples; the *_inferred methods: the minority side of the inferred partition). The "
        "runner scores that set against the training split's bias-conflicting groups, which the method never "
        "sees; values in percent at the last epoch that has a mined set. Precision: of the mined samples, the "
        "share that is bias-conflicting; recall: of the bias-conflicting samples, the share mined; a perfect "
        "miner's share equals the conflicting share."),
        Table(["dataset", "method", "seed", "epoch", "mined share", "precision", "recall", "conflicting share"],
              body, "mining")]
