#!/usr/bin/env python
"""The command line of the benchmark (``python run_bench.py ...``): the application on top of the engine
(``bench/``) and the reports (``reports/``), never inside them. With no command it runs the quick suite and
writes its report; ``python run_bench.py -h`` lists the commands. User errors: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import UserError
from bench.runs import MAX_SEED

DEFAULT_OUT = Path("results/runs")
DEFAULT_SUITE = "quick"
MAX_SEEDS = 10_000  # --seeds of a sweep: more is a typo (the sweep would expand forever)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see python run_bench.py -h)")


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"the seed must be an integer from 0 to {MAX_SEED}, got {text!r}")
    return seed


def _folder(text: str) -> Path:
    if not text or "\0" in text:  # Path("") would be the current folder
        raise argparse.ArgumentTypeError(f"needs a folder name, got {text!r}")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_bench.py", description="Debiasing / shortcut-learning benchmark suite. "
                     "With no command: run the quick suite and write its report.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    lister = sub.add_parser("list", help="list registered names")
    lister.add_argument("what", choices=["methods", "datasets", "suites", "models", "protocols"])

    run = sub.add_parser("run", help="run one method on one dataset")
    run.add_argument("--method", required=True)
    run.add_argument("--dataset", required=True)
    run.add_argument("--protocol", default="fast")
    run.add_argument("--seed", type=_seed, default=0)
    run.add_argument("--model", default=None, help="override the protocol's model")
    run.add_argument("--hp", action="append", metavar="KEY=VALUE", help="hyper-parameter override (repeatable)")
    run.add_argument("--data", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)")
    run.add_argument("--teacher-hp", action="append", metavar="KEY=VALUE",
                     help="hyper-parameter of the teacher artifact, for methods that need one (repeatable)")
    _common(run)

    sweep = sub.add_parser("sweep", help="run every run of a suite (skips finished, resumes interrupted)")
    sweep.add_argument("suite")
    sweep.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    sweep.add_argument("--protocol", default=None, help="override the suite's protocol")
    sweep.add_argument("--executor", default="inline",
                       help="inline | processes (local workers) | slurm (one cluster job per run, through submitit) "
                            "| submitit-local (the cluster jobs as local subprocesses)")
    sweep.add_argument("--workers", type=int, default=None)
    sweep.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                       help="what each cluster job asks for (repeatable): partition, account, qos, constraint, "
                            "time_min, gpus_per_node, cpus_per_task, mem_gb, array_parallelism; over the config file")
    sweep.add_argument("--slurm-config", type=Path, default=None, metavar="FILE",
                       help="YAML file of those options (default: $SHORTCUT_BENCH_SLURM, else "
                            "~/.config/shortcut-bench/slurm.yaml when it exists)")
    sweep.add_argument("--no-report", action="store_true")
    sweep.add_argument("--dry-run", action="store_true",
                       help="list the runs still to do with their estimated cost on this device; run nothing")
    sweep.add_argument("--max-hours", type=float, default=None, metavar="H",
                       help="run only what fits in H device-hours by the estimates: teachers, then seed by seed "
                            "in the suite's method order; says what it leaves out")
    sweep.add_argument("--export", action="store_true",
                       help="as each run finishes, add it to the reproductions of this suite and protocol "
                            "(results/reproductions/; needs a committed tree); students learn from the "
                            "reproductions' committed teachers")
    _common(sweep)

    report = sub.add_parser("report", help="write the report from the results store")
    report.add_argument("--out", type=_folder, default=DEFAULT_OUT)

    merge = sub.add_parser("merge", help="fold the shards written by cluster jobs into the folder's store "
                           "(idempotent; each run keeps its most settled record)")
    merge.add_argument("--out", type=_folder, default=DEFAULT_OUT)

    board = sub.add_parser("leaderboard", help="regenerate results/leaderboard/ from its committed records")
    board.add_argument("--add", type=_folder, default=None, metavar="DIR",
                       help="first merge the finished runs of the results folder DIR into the records")
    board.add_argument("--fresh", action="store_true",
                       help="with --add: replace the records instead of merging (a new code revision)")

    repro = sub.add_parser("reproduce", help="regenerate a seed-paper reproduction under results/reproductions/")
    repro.add_argument("name", nargs="?", default=None, help="the reproduction (default: all)")
    repro.add_argument("--add", type=_folder, default=None, metavar="DIR",
                       help="first merge the reproduction's finished runs of the results folder DIR into its records")

    perf = sub.add_parser("perf", help="training images/s per method on this device")
    perf.add_argument("--methods", nargs="*", default=None, help="methods to time (default: all)")
    perf.add_argument("--explanations", nargs="*", default=None,
                      help="explanation methods whose distillation step to time (default: all; none: no values)")
    perf.add_argument("--protocol", default="paper")
    perf.add_argument("--steps", type=int, default=20)
    perf.add_argument("--batch-size", type=int, default=None)
    perf.add_argument("--device", default="auto")

    data = sub.add_parser("datasets", help="dataset families: list, card (text) or show (PNG grid of samples)")
    data.add_argument("action", choices=["list", "card", "show"])
    data.add_argument("name", nargs="?", help="dataset family (for card and show)")
    data.add_argument("--data", action="append", metavar="KEY=VALUE", help="dataset option (repeatable)")
    data.add_argument("--seed", type=_seed, default=0)
    data.add_argument("--n", type=int, default=8, help="images per row (show)")
    data.add_argument("--device", default="cpu", help="cpu | cuda | auto: where the dataset is generated")
    data.add_argument("--out", type=_folder, default=Path("results/datasets"), help="folder for the pictures")

    gallery = sub.add_parser("explain", help="draw an explanation gallery (heatmaps of fixed test images) of a run")
    gallery.add_argument("--run", required=True, metavar="RUN_ID", help="a finished run's id")
    gallery.add_argument("--out", type=_folder, default=DEFAULT_OUT, help="results folder (default results/runs)")
    gallery.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                         help="explanation methods (default: lrp gradinput inputgrad gradcam)")
    gallery.add_argument("--n", type=int, default=4, help="images per group (bias-aligned, bias-conflicting)")
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again (default: keep them)")
    parser.add_argument("--reuse-stale", action="store_true",
                        help="keep finished runs whose code has changed since (default: run them again)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto (GPU when there is one)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="capture capturable training steps as whole-step CUDA graphs (GPU only)")
    parser.add_argument("--out", type=_folder, default=DEFAULT_OUT, help="results folder (default results/runs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_list(args: argparse.Namespace) -> None:
    from bench.data import list_datasets
    from bench.method import get_method, list_methods
    from bench.models import list_models
    from bench.protocols import list_protocols
    from bench.suites import get_suite, list_suites

    if args.what == "methods":
        width = max(len(name) for name in list_methods()) + 2
        for name in list_methods():
            cls = get_method(name)
            infers = f"; infers: {cls.infers}" if cls.infers else ""
            print(f"{name:<{width}}requires: {', '.join(sorted(cls.requires))}{infers}")
    elif args.what == "suites":
        from bench.suites import SUITES

        for name in list_suites():
            print(f"{name:<28}{_first_line(get_suite(name).description)}")
        for name, reason in SUITES.broken().items():
            print(f"{name:<28}BROKEN: {reason}")
    else:
        names = {"datasets": list_datasets, "models": list_models, "protocols": list_protocols}[args.what]()
        print("\n".join(names))


def _first_line(text: str) -> str:
    return next(iter(text.strip().splitlines()), "")


def cmd_run(args: argparse.Namespace) -> None:
    from bench.config import parse_assignments
    from bench.runner import Prepared, execute, pick_device
    from bench.runs import make_run_config
    from bench.store import Store, check_out_folder

    device = pick_device(args.device)
    cfg = make_run_config(args.method, args.dataset, args.protocol, args.seed,
                          hparams=parse_assignments(args.hp, "--hp"),
                          dataset_params=parse_assignments(args.data, "--data"), model=args.model,
                          teacher_hparams=parse_assignments(args.teacher_hp, "--teacher-hp"))
    check_out_folder(args.out, writable=True)
    prepared = Prepared(cfg, device)  # the run's own checks, before the store exists: a bad input writes nothing
    store = Store(args.out)
    record = execute(cfg, store, device, progress=not args.quiet, retry_failed=args.retry_failed,
                     reuse_stale=args.reuse_stale, prepared=prepared)
    _print_record(record)
    if record["status"] != "finished":
        sys.exit(1)


def _print_record(record: dict[str, Any]) -> None:
    print(f"{record['run_id']}: {record['status']}" + (f" ({record['error']})" if record.get("error") else ""))
    final = (record.get("final") or {}).get("iid_val")
    if final:
        accs = {k[:-4]: v for k, v in final.items() if k.endswith("_acc") and "group" not in k}
        print("  selection iid_val (epoch {}): ".format(final["epoch"])
              + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accs.items()))


def cmd_sweep(args: argparse.Namespace, suite_name: str | None = None) -> None:
    from bench.cluster import SlurmOptions
    from bench.suites import get_suite
    from bench.sweep import run_sweep

    suite = get_suite(suite_name or args.suite)
    if args.seeds is not None and args.seeds > MAX_SEEDS:
        raise UserError(f"--seeds must be <= {MAX_SEEDS}, got {args.seeds}")
    configs = suite.expand(seeds=args.seeds, protocol=args.protocol)
    if args.dry_run or args.max_hours is not None:
        configs = _planned(configs, suite.methods, args)
        if args.dry_run:
            return
    slurm = SlurmOptions.load(args.slurm_config, args.slurm) if args.executor in ("slurm", "submitit-local") else None
    after_each = (_exporter(suite.name, args.protocol or suite.protocol, args.out, args.reuse_stale)
                  if args.export else None)
    counts = run_sweep(configs, args.out, args.device, args.executor, args.workers, progress=not args.quiet,
                       retry_failed=args.retry_failed, reuse_stale=args.reuse_stale, after_each=after_each,
                       slurm=slurm)
    print(f"suite {suite.name}: {len(configs)} runs: {counts['finished']} finished "
          f"({counts['skipped']} already done), {counts['failed']} failed")
    for line in counts["failed_runs"]:
        print(f"  failed: {line}")
    if not args.no_report:
        _report(args.out)
    if counts["failed"]:
        print("some runs failed (see above); fix them and re-run with --retry-failed", file=sys.stderr)
        sys.exit(1)


def _planned(configs: list[Any], order: list[str], args: argparse.Namespace) -> list[Any]:
    """``--dry-run`` / ``--max-hours``: the plan of the sweep (printed for a dry run), trimmed to the budget;
    returns the configs to run. Reads the results folder and the committed records; writes nothing."""
    from bench.plan import format_plan, plan_sweep, trim
    from bench.runner import pick_device
    from bench.store import STORE_FILENAME, Store
    from reports.leaderboard import read_records

    device = pick_device(args.device)
    known: list[dict[str, Any]] = []
    done: dict[str, int] = {}
    if (args.out / STORE_FILENAME).exists():
        store = Store(args.out, create=False)
        known = store.runs()
        done = {r["run_id"]: len(store.epochs(r["run_id"])) for r in known}
        store.close()
    for path in sorted(Path("results").glob("**/records.jsonl")):
        known += read_records(path)
    planned = plan_sweep(configs, known, done, device, args.retry_failed, args.reuse_stale)
    kept, left = trim(planned, args.max_hours, order) if args.max_hours is not None else (planned, [])
    if args.dry_run:
        print(format_plan(kept, device, left))
    else:
        for p in left:
            print(f"left out (over --max-hours {args.max_hours}): {p.config.run_id} "
                  f"({p.seconds / 3600:.2f} h)", file=sys.stderr)
    kept_ids = {p.config.run_id for p in kept}
    return [c for c in configs if c.run_id in kept_ids]


def _exporter(suite: str, protocol: str, out: Path, reuse_stale: bool = False) -> Callable[[Any, str], None]:
    """``sweep --export``: first put the reproductions' committed teachers into the store (students learn from
    them); then, after each finished run, merge the store's finished runs into every reproduction of ``suite``
    at ``protocol`` and regenerate its files, so a stopped sweep loses at most the run in progress."""
    import reports.reproduction as reproduction
    from bench.provenance import git_revision

    reps = [rep for rep in reproduction.REPRODUCTIONS.values() if rep.suite == suite and protocol in rep.protocols]
    if not reps:
        raise UserError(f"no reproduction reports suite {suite} at protocol {protocol}; run without --export")
    revision = git_revision()
    if revision.endswith("+dirty") or revision == "unknown":
        raise UserError("--export records runs in results/reproductions/, which takes runs of a committed tree: "
                        "commit your changes (or run without --export)")
    for rep in reps:
        for run_id in reproduction.import_teachers(rep, out):
            print(f"{rep.name}: teacher {run_id} taken from its committed weights"
                  + ("" if reuse_stale else " (if the code changed since, it is trained again and its committed "
                     "weights replaced; --reuse-stale keeps it)"), file=sys.stderr)

    def export(config: Any, status: str) -> None:
        if status != "finished":
            return
        folder = reproduction.REPRODUCTION_DIR
        for rep in reps:
            try:
                added = reproduction.add_records(rep, out, folder)
            except UserError as err:  # e.g. older runs of an uncommitted tree in the store: the sweep goes on
                print(f"{rep.name}: not exported ({err})", file=sys.stderr)
                continue
            path = reproduction.write_reproduction(rep, folder)
            print(f"{rep.name}: {added} finished runs exported to {path}", file=sys.stderr)

    return export


def _report(out: Path) -> None:
    from bench.store import check_out_folder
    from reports.report import write_report

    check_out_folder(out, writable=True)
    folder = write_report(out)
    print(f"report: {folder / 'report.md'} and {folder / 'index.html'}")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from reports.leaderboard import update_leaderboard

    if args.fresh and args.add is None:
        raise UserError("--fresh replaces the records with those of --add DIR; name the results folder")
    print(f"leaderboard: {update_leaderboard(args.add, fresh=args.fresh)}")


def cmd_merge(args: argparse.Namespace) -> None:
    from bench.store import STORE_FILENAME, merge_shards, shard_paths

    if not shard_paths(args.out):
        raise UserError(f"no shards under {args.out / 'shards'}; pass --out to the folder a cluster sweep wrote")
    counts = merge_shards(args.out)
    print(f"merged {counts['shards']} shards into {args.out / STORE_FILENAME}: {counts['copied']} runs copied, "
          f"{counts['unchanged']} already there")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from reports.reproduction import REPRODUCTIONS, add_records, get_reproduction, write_reproduction

    if args.add is not None and args.name is None:
        raise UserError("--add needs the reproduction's name: python run_bench.py reproduce NAME --add DIR")
    chosen = [get_reproduction(args.name)] if args.name else [REPRODUCTIONS[n] for n in sorted(REPRODUCTIONS)]
    for rep in chosen:
        if args.add is not None:
            print(f"{rep.name}: {add_records(rep, args.add)} finished runs of {args.add} added")
        print(f"reproduction: {write_reproduction(rep)}")


def cmd_perf(args: argparse.Namespace) -> None:
    from bench.perf import format_results, run_perf
    from bench.provenance import device_name
    from bench.runner import pick_device

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    from bench.explain import EXPLAINERS

    for name in args.explanations or []:
        EXPLAINERS.get(name)
    device = pick_device(args.device)
    results = run_perf(args.methods, args.protocol, device, args.steps, args.batch_size, explanations=args.explanations)
    print(format_results(results, device_name(device), args.protocol))


def cmd_explain(args: argparse.Namespace) -> None:
    from bench.explain import list_explainers
    from bench.store import check_out_folder
    from reports.gallery import write_gallery

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    check_out_folder(args.out, writable=True)  # the gallery is written into the results folder
    unknown = [m for m in args.methods or [] if m not in list_explainers()]
    if unknown:
        raise UserError(f"unknown explanation method {unknown[0]!r} in --methods; "
                        f"choose from {', '.join(list_explainers())}")
    print(write_gallery(args.out, args.run, methods=args.methods, n_per_group=args.n))


def cmd_datasets(args: argparse.Namespace) -> None:
    from bench.config import parse_assignments
    from bench.data import DATASETS, list_datasets, load_dataset
    from bench.runner import pick_device

    if args.action == "list":
        for name in list_datasets():
            print(f"{name:<20}{DATASETS.get(name).card.splitlines()[0]}")
        return
    if args.name is None:
        raise UserError(f"datasets {args.action} needs a dataset name; choose from {', '.join(list_datasets())}")
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    from bench.store import check_out_folder
    from reports.dataset_show import card_text, write_dataset_picture

    if args.action == "show":
        check_out_folder(args.out, writable=True)
    dataset = load_dataset(args.name, parse_assignments(args.data, "--data"), args.seed, pick_device(args.device))
    if args.action == "card":
        print(card_text(dataset), end="")
        return
    path = write_dataset_picture(dataset, args.out / f"{args.name}-seed{args.seed}.png", n=args.n)
    print(f"{path} (card: {path.with_suffix('.md')})")


def _one_line(message: str) -> str:
    """Messages are written as one line; this keeps the promise for one that quotes multi-line text."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            args = build_parser().parse_args(["sweep", DEFAULT_SUITE])
        if getattr(args, "cuda_graphs", False):
            from bench.cudagraph import ENV_FLAG

            os.environ[ENV_FLAG] = "1"  # read by the runner, inherited by worker processes
        handlers = {"list": cmd_list, "run": cmd_run, "sweep": cmd_sweep, "perf": cmd_perf,
                    "report": lambda a: _report(a.out), "explain": cmd_explain,
                    "datasets": cmd_datasets, "leaderboard": cmd_leaderboard,
                    "reproduce": cmd_reproduce, "merge": cmd_merge}
        handlers[args.command](args)
    except UserError as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
