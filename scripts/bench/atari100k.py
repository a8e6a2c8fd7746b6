"""The Atari 100k benchmark: N seeds of a gin file at 100k agent steps, and their report.

Runs `python -m pipeline.train --gin_file=GIN --gin_bindings=train.seed=S --root_dir=OUT/sS`
for each seed, one at a time (wall times are per seed, on a quiet machine), its output
appended to `OUT/sS.log`. Every run resumes from its newest checkpoint, so running the same
command again continues unfinished seeds where they stopped (across sessions too) and only
reports finished ones. Ctrl-C or SIGTERM goes to the running seed, which checkpoints; this
script then writes the report so far and exits 75.

A finished seed's record (its run.json, config.gin and metrics.jsonl, and the wall times it
trained and evaluated: a few KB, no checkpoints) is copied to
`data/results/atari100k/<OUT name>/sS`, where git carries it: a seed whose run directory is
gone (a new machine, a new session) but whose record is there counts as finished and is not
trained again. Every seed in a report must have run one config (config.gin without
`train.seed`): a report that would mix two stops with exit 2 and names the seeds.

Writes `OUT/report.md` and `OUT/report.json`: each seed's final score (the mean of the last
evaluation's games, 100 in drq_breakout.gin), the IQM over seeds with its stratified-bootstrap
95% CI (rliable), the median and mean, the wall time each seed trained (over all its
sessions, from its checkpoints) and how much of it went to evaluations (the final one
apart), and the published Atari-100k figures beside them (`data/atari100k_breakout.csv`); and
`OUT/curve/learning_curves.png` drawn by `pipeline.report`.

    .venv/bin/python scripts/bench/atari100k.py --gin_file=drq_breakout.gin --seeds=0-4
    .venv/bin/python scripts/bench/atari100k.py ... --report_only   # no training
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline import report  # noqa: E402
from pipeline.analysis.report import stats  # noqa: E402
from pipeline.analysis.runs import load_run  # noqa: E402
from pipeline.run.checkpoints import CheckpointStore  # noqa: E402
from pipeline.run.files import holds_run, parse_config_str  # noqa: E402
from pipeline.run.preemption import EXIT_PREEMPTED  # noqa: E402
from pipeline.sweep.grid import SweepError, parse_seeds  # noqa: E402

REFERENCES = REPO / "data" / "atari100k_breakout.csv"
ARCHIVE = REPO / "data" / "results" / "atari100k"
ARCHIVED_FILES = ("run.json", "config.gin", "metrics.jsonl")
ARCHIVE_INFO = "bench.json"  # the seed's wall time and when it was archived


def published() -> list[tuple[str, float, str]]:
    """(system, score, source and note) for each published Atari-100k figure in REFERENCES
    (data/published/anchors.md gives each one's protocol and source)."""
    with REFERENCES.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [(r["algorithm"], float(r["return"]), f"{r['source']}; {r['note']}") for r in rows]


def default_out(gin_file: str, bindings: list[str]) -> Path:
    name = Path(gin_file).name.removesuffix(".gin")
    if bindings:
        name += "-" + hashlib.sha1("\n".join(bindings).encode()).hexdigest()[:8]
    return REPO / "runs" / "atari100k" / name


class BenchError(Exception):
    """A request this bench refuses, told in one line."""


def train_command(gin_file: str, bindings: list[str], seed: int, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        f"--gin_file={gin_file}",
        f"--gin_bindings=train.seed={seed}",
        *(f"--gin_bindings={b}" for b in bindings),
        f"--root_dir={run_dir}",
    ]


class Forwarder:
    """Passes SIGINT/SIGTERM to the running seed once and remembers that it did."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        del frame
        self.stopped = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def run_seed(command: list[str], log_path: Path, forwarder: Forwarder) -> int:
    with log_path.open("a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(command)}\n")
        log.flush()
        forwarder.child = subprocess.Popen(
            command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        code = forwarder.child.wait()
        forwarder.child = None
    return code


def timings(run_dir: Path) -> dict:
    """Seconds the run trained, over its sessions, and each evaluation's seconds by env steps
    (`eval_s`, empty where the run predates them), as its newest checkpoint (or, for an
    archived seed, its record) says; `wall_s` None where neither exists yet."""
    if (run_dir / ARCHIVE_INFO).is_file():
        info = json.loads((run_dir / ARCHIVE_INFO).read_text())
        return {"wall_s": info["wall_s"], "eval_s": info.get("eval_s", {})}
    complete = CheckpointStore(run_dir / "checkpoints", keep=1).complete()
    if not complete:
        return {"wall_s": None, "eval_s": {}}
    loop = json.loads((complete[0][1] / "loop.json").read_text())
    return {"wall_s": loop.get("wall_s"), "eval_s": loop.get("eval_s", {})}


def seed_dir(seed: int, out: Path, archive: Path | None) -> Path:
    """The seed's run directory under OUT, or its archived record where OUT has no run."""
    live = out / f"s{seed}"
    kept = archive / f"s{seed}" if archive else None
    if not holds_run(live) and kept is not None and (kept / ARCHIVE_INFO).is_file():
        return kept
    return live


def seed_result(seed: int, run_dir: Path) -> dict:
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    run = load_run(run_dir, explicit=True) if rows else None
    total = run.total_env_steps if run else None
    final = rows[-1] if rows and total is not None and rows[-1]["env_steps"] >= total else None
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    git = info.get("git", {})
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "archived": (run_dir / ARCHIVE_INFO).is_file(),
        "git": git.get("revision"),
        "dirty": bool(git.get("dirty")),
        "started": info.get("started"),
        "finished": final is not None,
        "env_steps": rows[-1]["env_steps"] if rows else 0,
        "final_score": final["eval_return_mean"] if final else None,
        "final_games": final["eval_episodes"] if final else None,
        "final_score_std": final["eval_return_std"] if final else None,
        **timings(run_dir),
        "curve": [[r["env_steps"], r["eval_return_mean"]] for r in rows],
    }


def archive_seed(result: dict, archive: Path) -> None:
    """Copies a finished seed's record out of runs/, which does not outlive the machine."""
    source, target = Path(result["run_dir"]), archive / f"s{result['seed']}"
    if result["archived"] or not result["finished"] or (target / ARCHIVE_INFO).is_file():
        return  # a record, once written, is what the seed scored: later reports keep it
    target.mkdir(parents=True, exist_ok=True)
    for name in ARCHIVED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info = {
        "wall_s": result["wall_s"],
        "eval_s": result["eval_s"],
        "archived": stamp,
        "from": str(source),
    }
    (target / ARCHIVE_INFO).write_text(json.dumps(info, indent=1) + "\n")


def config_without_seed(run_dir: Path) -> str:
    config = parse_config_str((run_dir / "config.gin").read_text())
    return json.dumps({k: v for k, v in config.items() if k != "train.seed"}, sort_keys=True)


def check_one_config(results: list[dict]) -> None:
    """Seeds that ran different configs (a gin file changed between sessions) are not one
    sample: refuse to pool them."""
    groups: dict[str, list[int]] = {}
    for r in results:
        if (Path(r["run_dir"]) / "config.gin").is_file():
            groups.setdefault(config_without_seed(Path(r["run_dir"])), []).append(r["seed"])
    if len(groups) > 1:
        described = "; ".join("seeds " + ",".join(map(str, g)) for g in groups.values())
        raise BenchError(
            f"the seeds ran {len(groups)} different configs ({described}): move the "
            "outdated seeds' run directories and archived records aside and run them again"
        )


def summarize(results: list[dict], reps: int) -> dict:
    scores = [r["final_score"] for r in results if r["finished"]]
    if not scores:
        return {"seeds_finished": 0}
    iqm, low, high = stats.iqm_with_ci(scores, reps=reps)
    walls = [r["wall_s"] for r in results if r["finished"] and r["wall_s"] is not None]
    return {
        "seeds_finished": len(scores),
        "iqm": iqm,
        "iqm_ci95": [low, high],
        "median": statistics.median(scores),
        "mean": statistics.fmean(scores),
        "min": min(scores),
        "seeds_at_least_10": sum(s >= 10 for s in scores),
        "wall_s_max": max(walls) if walls else None,
        "wall_s_median": statistics.median(walls) if walls else None,
    }


def evaluating(result: dict) -> str:
    """Minutes the seed spent in all its evaluations, and in the final one (the score's)."""
    eval_s = result["eval_s"]
    if not eval_s:
        return "-"
    final = eval_s.get(str(result["env_steps"])) if result["finished"] else None
    text = f"{sum(eval_s.values()) / 60:.1f} min"
    return text + (f" ({final / 60:.1f} min)" if final is not None else "")


def code_revisions(results: list[dict]) -> str:
    """Which commit each seed ran, so a report that pools sessions says what code it pools."""
    seeds: dict[str, list[str]] = {}
    for r in results:
        if r["curve"]:
            revision = (r["git"] or "unknown")[:7]
            revision += " (uncommitted changes)" if r["dirty"] else ""
            seeds.setdefault(revision, []).append(str(r["seed"]))
    return "; ".join(f"{rev}: seeds {','.join(s)}" for rev, s in seeds.items()) or "none yet"


def markdown(args: argparse.Namespace, out: Path, results: list[dict], summary: dict) -> str:
    shown_out = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    command = f"scripts/bench/atari100k.py --gin_file={args.gin_file} --seeds=" + ",".join(
        str(r["seed"]) for r in results
    )
    command += "".join(f" --gin_bindings='{b}'" for b in args.gin_bindings)
    command += f" --out={shown_out}"
    lines = [
        f"# Atari 100k: {args.gin_file}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `.venv/bin/python {command}`.",
        f"Code (git revision each seed ran): {code_revisions(results)}.",
        "Score: the mean true game score of the final evaluation (whole games, epsilon as in "
        "the gin file). IQM and its 95% CI: rliable, stratified bootstrap over seeds.",
        "",
        "Wall time: the seed's, over its sessions; of which evaluating: all its evaluations, "
        'and the final one alone ("-": a run from before evaluations were timed).',
        "",
        "| seed | env steps | final score | games | wall time | of which evaluating (final) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        score = f"{r['final_score']:.1f} +- {r['final_score_std']:.1f}" if r["finished"] else "-"
        wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] is not None else "-"
        status = "" if r["finished"] else " (unfinished)"
        lines.append(
            f"| {r['seed']} | {r['env_steps']:,}{status} | {score} | {r['final_games'] or '-'} "
            f"| {wall} | {evaluating(r)} |"
        )
    lines.append("")
    if summary.get("seeds_finished"):
        low, high = summary["iqm_ci95"]
        wall_max = summary["wall_s_max"]
        lines += [
            f"- seeds finished: {summary['seeds_finished']} of {len(results)}",
            f"- IQM {summary['iqm']:.1f} (95% CI {low:.1f} to {high:.1f}); median "
            f"{summary['median']:.1f}; mean {summary['mean']:.1f}; lowest seed "
            f"{summary['min']:.1f}; seeds >= 10: {summary['seeds_at_least_10']}",
            "- wall time per seed: "
            + (f"at most {wall_max / 60:.1f} min" if wall_max is not None else "unknown"),
            "",
        ]
    lines += ["| published (Breakout, Atari 100k) | score | note |", "|---|---|---|"]
    lines += [f"| {name} | {score} | {note} |" for name, score, note in published()]
    lines += ["", "![learning curve](curve/learning_curves.png)", ""]
    return "\n".join(lines)


def write_report(args: argparse.Namespace, out: Path) -> dict:
    results = [seed_result(seed, seed_dir(seed, out, args.archive)) for seed in args.seeds]
    check_one_config([r for r in results if r["finished"]])
    if args.archive:
        for result in results:
            archive_seed(result, args.archive)
    summary = summarize(results, args.reps)
    started = [r["run_dir"] for r in results if r["curve"]]
    if started:
        code = report.command([*started, f"--out={out / 'curve'}", f"--references={REFERENCES}"])
        if code != 0:
            print("warning: pipeline.report could not draw the curve", file=sys.stderr)
    payload = {"gin_file": args.gin_file, "gin_bindings": args.gin_bindings}
    payload |= {"seeds": results, "summary": summary, "published": published()}
    (out / "report.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "report.md").write_text(markdown(args, out, results, summary))
    print((out / "report.md").read_text())
    return summary


def train_seeds(args: argparse.Namespace, out: Path, forwarder: Forwarder) -> int | None:
    """Trains the seeds that have no finished record, one at a time; an exit status where
    the bench must stop early, None when every seed ran."""
    for seed in args.seeds:
        if forwarder.stopped:
            return EXIT_PREEMPTED
        run_dir = seed_dir(seed, out, args.archive)
        if (run_dir / ARCHIVE_INFO).is_file():
            print(f"seed {seed}: finished earlier, archived in {run_dir}")
            continue
        command = train_command(args.gin_file, args.gin_bindings, seed, run_dir)
        print(f"seed {seed}: {' '.join(command[1:])} (log: {out / f's{seed}.log'})")
        code = run_seed(command, out / f"s{seed}.log", forwarder)
        if code == EXIT_PREEMPTED or forwarder.stopped:
            print(f"seed {seed} stopped with a checkpoint; run this command again to go on")
            return EXIT_PREEMPTED
        if code != 0:
            print(f"error: seed {seed} failed (exit {code}); see {out / f's{seed}.log'}")
            return 1
        if args.archive:  # at once, so a session that ends in the next seed keeps this one
            archive_seed(seed_result(seed, run_dir), args.archive)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gin_file", default="drq_breakout.gin")
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--out", type=Path, help="default: runs/atari100k/<gin file>[-<hash>]")
    parser.add_argument(
        "--archive",
        type=Path,
        help="where finished seeds' records go (default: data/results/atari100k/<OUT name>; "
        "--archive= keeps none)",
    )
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap resamples (rliable)")
    parser.add_argument("--report_only", action="store_true", help="train nothing, report")
    args = parser.parse_args()
    try:
        args.seeds = parse_seeds(args.seeds)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or default_out(args.gin_file, args.gin_bindings)
    if args.archive is None:
        args.archive = ARCHIVE / out.name
    elif str(args.archive) in ("", "."):
        args.archive = None
    out.mkdir(parents=True, exist_ok=True)
    forwarder = Forwarder()
    try:
        code = None if args.report_only else train_seeds(args, out, forwarder)
        write_report(args, out)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
