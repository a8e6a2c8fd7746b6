"""Grid x seeds sweeps of `pipeline.train`, run here or as one Slurm array job.

    python -m pipeline.sweep --gin_file=dqn_cartpole.gin \
        --grid='train.batch_size=32,64' --grid='Adam.learning_rate=1e-3,1e-4' \
        --seeds=0-2 [--launcher=slurm] [--parallel=2] [--dry_run] [--aggregate]

Every run is one unchanged `python -m pipeline.train` command whose `--root_dir` is derived
from its settings only (`<sweep_dir>/<setting slug>/s<seed>`), so running the same sweep
again skips finished runs and resumes unfinished ones: resume is the trainer's job, and the
sweep never has to remember what it did. Gin settings are checked (in a child process that
imports the trainer's configurables, as `pipeline.train` does) before anything is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit
from absl import flags

from pipeline import cli
from pipeline.analysis import aggregate as aggregation
from pipeline.run.preemption import EXIT_PREEMPTED

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILE = aggregation.SWEEP_FILE
SUBMISSIONS_FILE = "submissions.jsonl"  # under <sweep_dir>/slurm/
MAX_SLUG = 80
_NAME = re.compile(r"^[A-Za-z_][\w./]*\.[A-Za-z_]\w*$")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_CHECK_MARK = "@@sweep-check@@ "
FLAGS = flags.FLAGS


class SweepError(Exception):
    """A mistake in the sweep's flags: one line, exit status 2, nothing written."""


# --- what a sweep is -------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """Splits `v1,v2,...` at top-level commas, so `(64,64),(32,)` is two values."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth < 0:
                raise SweepError(f"unbalanced {char!r} in {text!r}")
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise SweepError(f"unclosed quote or bracket in {text!r}")
    values.append("".join(current).strip())
    return values


def binding_name(binding: str) -> str:
    return binding.split("=", 1)[0].strip()


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """`--grid='name=v1,v2'` flags as {name: values}, in the order given."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, values_text = spec.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise SweepError(
                f"malformed --grid={spec!r}: write --grid='Configurable.parameter=v1,v2', "
                "e.g. --grid='train.batch_size=32,64'"
            )
        try:
            values = split_values(values_text)
        except SweepError as error:
            raise SweepError(f"malformed --grid={spec!r}: {error}") from None
        if any(not value for value in values):
            raise SweepError(
                f"empty value in --grid={spec!r}: list values separated by commas, "
                "e.g. --grid='train.batch_size=32,64'"
            )
        if len(set(values)) != len(values):
            raise SweepError(f"repeated value in --grid={spec!r}: list each value once")
        if name in grid:
            raise SweepError(f"--grid names {name} twice: give all its values in one --grid")
        grid[name] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """`0,1,2`, `0-4` or a mix (`0-2,7`), in order, each once."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise SweepError(
                f"bad --seeds={text!r}: give seeds such as --seeds=0,1,2 or --seeds=0-4"
            )
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise SweepError(f"bad --seeds={text!r}: the range {part} is empty; write {high}-{low}")
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def expand(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product of the grid, first name slowest; one empty setting for no grid."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _short_names(names: Sequence[str]) -> dict[str, str]:
    """`train.batch_size` -> `batch_size`, unless two names would then look the same."""
    short = {name: name.rsplit(".", 1)[-1] for name in names}
    if len(set(short.values())) < len(short):
        return {name: name for name in names}
    return short


def setting_slug(setting: dict[str, str]) -> str:
    """A readable, stable directory name for a setting: `batch_size=32,learning_rate=1e-3`.

    Characters a path should not hold are replaced, and then (or when the name is long) a
    hash of the exact setting is appended, so two settings never share a directory.
    """
    if not setting:
        return "default"
    short = _short_names(list(setting))
    parts, lossy = [], False
    for name, value in setting.items():
        shown = value.strip().strip("'\"").removeprefix("@")
        safe = _SAFE.sub("_", shown).strip("_")
        lossy = lossy or safe != shown or not safe
        parts.append(f"{short[name]}={safe}")
    slug = ",".join(parts)
    if lossy or len(slug) > MAX_SLUG:
        exact = "\n".join(f"{name}={value}" for name, value in sorted(setting.items()))
        digest = hashlib.sha1(exact.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_SLUG - 10].rstrip(',=_')}-{digest}"
    return slug


def default_sweep_dir(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> Path:
    """sweeps/<gin stems>[-<hash of fixed bindings>], like runs/ for single runs."""
    stems = "+".join(Path(f).name.removesuffix(".gin") for f in gin_files) or "default"
    if gin_bindings:
        stems += "-" + hashlib.sha1("\n".join(gin_bindings).encode()).hexdigest()[:8]
    return Path("sweeps") / stems


def normalize_gin_file(name: str) -> str:
    """A gin file that exists from here becomes absolute (runs may start elsewhere); a bare
    name stays bare, for the trainer to find in gin/ as usual."""
    for candidate in (Path(name), Path(name + ".gin")):
        if candidate.is_file():
            return str(candidate.resolve())
    return name


@dataclass
class Run:
    """One training run of a sweep, as written to sweep.json."""

    setting: dict[str, str]
    slug: str
    seed: int
    run_dir: str  # relative to the sweep directory
    root_dir: str  # absolute, as passed to the trainer
    log: str  # the trainer's stdout and stderr, appended attempt after attempt
    command: list[str]
    total_env_steps: int | None

    def finished(self) -> bool:
        """The run evaluated at its last step, so running it again would only report."""
        rows = aggregation.read_eval_rows(Path(self.root_dir))
        if not rows or self.total_env_steps is None:
            return False
        return int(rows[-1]["env_steps"]) >= self.total_env_steps


@dataclass
class Sweep:
    gin_files: list[str]
    gin_bindings: list[str]
    grid: dict[str, list[str]]
    seeds: list[int]
    sweep_dir: Path
    seed_bindings: list[str]
    runs: list[Run]

    def to_json(self) -> dict[str, Any]:
        return {
            "gin_files": self.gin_files,
            "gin_bindings": self.gin_bindings,
            "grid": self.grid,
            "seeds": self.seeds,
            "sweep_dir": str(self.sweep_dir),
            "runs": [asdict(run) for run in self.runs],
        }


def train_command(gin_files: Sequence[str], bindings: Sequence[str], root_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        *(f"--gin_file={name}" for name in gin_files),
        *(f"--gin_bindings={binding}" for binding in bindings),
        f"--root_dir={root_dir}",
    ]


def check_gin(
    gin_files: Sequence[str], gin_bindings: Sequence[str], settings: Sequence[dict[str, str]]
) -> list[dict[str, Any]]:
    """Parses every setting strictly in a child process; returns each setting's seed binding
    name and total_env_steps. The child imports TensorFlow; this process need not."""
    request = {
        "gin_files": list(gin_files),
        "gin_bindings": list(gin_bindings),
        "settings": [[f"{k}={v}" for k, v in s.items()] for s in settings],
    }
    code = "from pipeline.sweep import _check_in_child; _check_in_child()"
    try:
        child = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=600,
            env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SweepError(
            f"could not check the gin settings ({error}): try pipeline.train"
        ) from None
    marked = [line for line in child.stdout.splitlines() if line.startswith(_CHECK_MARK)]
    if not marked:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise SweepError(f"could not check the gin settings (exit {child.returncode}): {tail}")
    answer = json.loads(marked[-1][len(_CHECK_MARK) :])
    if "error" in answer:
        where = answer.get("setting")
        shown = setting_slug(settings[where]) if where is not None and settings[where] else ""
        suffix = f" (in the grid setting {shown})" if shown else ""
        raise SweepError(answer["error"] + suffix)
    return answer["settings"]


def _check_in_child() -> None:
    """Runs in the child of `check_gin`: strict gin parsing with the trainer's registry."""
    import gin

    from pipeline import config
    from pipeline.errors import UserError

    request = json.loads(sys.stdin.read())

    def parse(bindings: list[str]) -> None:
        gin.clear_config()
        config.parse(request["gin_files"], bindings)

    def reply(answer: dict[str, Any]) -> None:
        print(_CHECK_MARK + json.dumps(answer), flush=True)

    try:
        parse(request["gin_bindings"])
    except UserError as error:
        return reply({"error": str(error).splitlines()[0]})
    answers = []
    for index, setting in enumerate(request["settings"]):
        try:
            parse([*request["gin_bindings"], *setting])
            run = config.run_settings()
            parse([*request["gin_bindings"], *setting, f"{run.binding('seed')}=0"])
        except UserError as error:
            message = str(error).splitlines()[0]
            for binding in setting:  # name the grid value at fault, if one alone fails
                try:
                    parse([*request["gin_bindings"], binding])
                except UserError:
                    return reply({"error": f"{message} (from --grid value {binding})"})
            return reply({"error": message, "setting": index})
        answers.append(
            {"seed_binding": run.binding("seed"), "total_env_steps": run.total_env_steps}
        )
    reply({"settings": answers})


def build_sweep(
    gin_files: Sequence[str],
    gin_bindings: Sequence[str],
    grid_specs: Sequence[str],
    seeds_text: str,
    sweep_dir: str | None,
) -> Sweep:
    """Checks the flags and expands them into runs; writes nothing."""
    if not gin_files:
        raise SweepError("no --gin_file: give one, e.g. --gin_file=dqn_cartpole.gin")
    grid = parse_grid(grid_specs)
    seeds = parse_seeds(seeds_text) if seeds_text.strip() else []
    if not seeds:
        raise SweepError("no seeds: give --seeds=0,1,2 or --seeds=0-4")
    for binding in gin_bindings:
        if "=" not in binding:
            raise SweepError(f"malformed --gin_bindings={binding!r}: write name=value")
    fixed_names = {binding_name(b) for b in gin_bindings}
    for name in [*grid, *fixed_names]:
        if name.rsplit(".", 1)[-1] == "seed":
            raise SweepError(f"{name} is set by --seeds: remove it from --grid/--gin_bindings")
    for name in grid:
        if name in fixed_names:
            raise SweepError(f"{name} is both in --grid and --gin_bindings: keep one")
    files = [normalize_gin_file(name) for name in gin_files]
    settings = expand(grid)
    checked = check_gin(files, gin_bindings, settings)
    root = Path(sweep_dir) if sweep_dir else default_sweep_dir(gin_files, gin_bindings)
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise SweepError(f"--sweep_dir {root} is a file: choose a directory")
    runs, seed_bindings = [], []
    for setting, info in zip(settings, checked, strict=True):
        slug = setting_slug(setting)
        seed_bindings.append(info["seed_binding"])
        for seed in seeds:
            run_dir = f"{slug}/s{seed}"
            bindings = [
                *gin_bindings,
                *(f"{k}={v}" for k, v in setting.items()),
                f"{info['seed_binding']}={seed}",
            ]
            runs.append(
                Run(
                    setting=setting,
                    slug=slug,
                    seed=seed,
                    run_dir=run_dir,
                    root_dir=str(root / run_dir),
                    log=str(root / slug / f"s{seed}.log"),
                    command=train_command(files, bindings, root / run_dir),
                    total_env_steps=info["total_env_steps"],
                )
            )
    return Sweep(files, list(gin_bindings), grid, seeds, root, seed_bindings, runs)


def write_sweep_file(sweep: Sweep) -> None:
    """Writes sweep.json atomically, refusing a directory that holds another sweep."""
    path = sweep.sweep_dir / SWEEP_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = {}
        for key in ("gin_files", "gin_bindings"):
            if key in before and before[key] != getattr(sweep, key):
                raise SweepError(
                    f"--sweep_dir {sweep.sweep_dir} holds a sweep with other {key} "
                    f"({before[key]} there, {getattr(sweep, key)} now): choose another --sweep_dir"
                )
    try:
        sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
        aggregation.atomic_write_text(path, json.dumps(sweep.to_json(), indent=2) + "\n")
    except OSError as error:
        raise SweepError(
            f"cannot write --sweep_dir {sweep.sweep_dir} ({error.strerror}): choose a writable path"
        ) from None


def _child_env() -> dict[str, str]:
    """This process's environment, with the repository importable from any working directory."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _log_header(log: Any, run: Run, where: str) -> None:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {where}: {shlex.join(run.command)}\n")
    log.flush()


def _last_line(path: Path, prefix: str = "") -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    chosen = [line for line in lines if line.startswith(prefix)] if prefix else lines
    return (chosen or lines or [""])[-1].strip()


def print_runs(sweep: Sweep) -> None:
    for index, run in enumerate(sweep.runs, 1):
        print(f"[{index}/{len(sweep.runs)}] {run.run_dir}")
        print(f"  root_dir: {run.root_dir}")
        print(f"  command:  {shlex.join(run.command)}")


# --- local launcher --------------------------------------------------------------------------


class LocalLauncher:
    """Runs the sweep's train commands here, `parallel` at a time.

    Children get their own session, so a terminal's Ctrl-C reaches only this process, which
    forwards it (and SIGTERM) once to every child: each writes a checkpoint and exits 75.
    """

    def __init__(self, sweep: Sweep, parallel: int, progress_interval_s: float = 30.0):
        self.sweep = sweep
        self.parallel = parallel
        self.progress_interval_s = progress_interval_s
        self.running: dict[int, tuple[Run, subprocess.Popen, float, Any]] = {}
        self.stop_signal: int | None = None
        self.counts = {"finished": 0, "skipped": 0, "failed": 0, "preempted": 0}
        self.failures: list[str] = []

    def _forward(self, signum: int, frame: object) -> None:
        del frame
        self.stop_signal = signum
        print(
            f"received {signal.Signals(signum).name}: passing it to {len(self.running)} "
            "running runs (they checkpoint and stop); no new runs start",
            flush=True,
        )
        for _, process, _, _ in self.running.values():
            try:
                process.send_signal(signum)
            except ProcessLookupError:
                pass

    def _start(self, run: Run) -> None:
        Path(run.log).parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log, "a", encoding="utf-8")
        _log_header(log, run, "local")
        process = subprocess.Popen(
            run.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
        )
        self.running[process.pid] = (run, process, time.monotonic(), log)

    def _done(self) -> int:
        return sum(self.counts.values())

    def _reap(self, total: int) -> None:
        for pid, (run, process, started, log) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            log.close()
            del self.running[pid]
            seconds = time.monotonic() - started
            if code == 0:
                self.counts["finished"] += 1
                line = _last_line(Path(run.log), "final eval return")
                status = f"finished in {seconds:.0f} s: {line}"
            elif code == EXIT_PREEMPTED:
                self.counts["preempted"] += 1
                status = "pre-empted (checkpoint written; resumes when the sweep runs again)"
            elif self.stop_signal is not None:  # stopped before it could take the signal
                self.counts["preempted"] += 1
                status = f"stopped (exit status {code}); runs again with the sweep"
            else:
                self.counts["failed"] += 1
                line = _last_line(Path(run.log), "error:") or _last_line(Path(run.log))
                status = f"FAILED (exit status {code}): {line}; log: {run.log}"
                self.failures.append(run.run_dir)
            print(f"[{self._done()}/{total}] {run.run_dir} {status}", flush=True)

    def run(self) -> int:
        """Runs everything not finished; returns 0, 1 (a run failed) or 75 (interrupted)."""
        runs = self.sweep.runs
        todo = []
        for run in runs:
            if run.finished():
                self.counts["skipped"] += 1
                print(f"[{self._done()}/{len(runs)}] {run.run_dir} already finished", flush=True)
            else:
                todo.append(run)
        print(f"{len(todo)} of {len(runs)} runs to go, {self.parallel} at a time", flush=True)
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        last_progress = time.monotonic()
        try:
            while todo or self.running:
                while todo and len(self.running) < self.parallel and self.stop_signal is None:
                    run = todo.pop(0)
                    print(f"starting {run.run_dir} (log: {run.log})", flush=True)
                    self._start(run)
                if self.stop_signal is not None and not self.running:
                    break
                time.sleep(0.2)
                self._reap(len(runs))
                if time.monotonic() - last_progress >= self.progress_interval_s:
                    last_progress = time.monotonic()
                    self._print_progress(len(runs))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        not_started = len(todo)
        print(
            f"sweep: {len(runs)} runs: {self.counts['finished']} finished now, "
            f"{self.counts['skipped']} already finished, {self.counts['failed']} failed, "
            f"{self.counts['preempted'] + not_started} to resume"
            + (f" (failed: {', '.join(self.failures)})" if self.failures else ""),
            flush=True,
        )
        if self.counts["failed"]:
            return 1
        if self.stop_signal is not None or self.counts["preempted"] or not_started:
            return EXIT_PREEMPTED
        return 0

    def _print_progress(self, total: int) -> None:
        parts = []
        for run, _, started, _ in self.running.values():
            rows = aggregation.read_eval_rows(Path(run.root_dir))
            steps = f"{int(rows[-1]['env_steps']):,} env steps" if rows else "starting"
            parts.append(f"{run.run_dir} ({steps}, {time.monotonic() - started:.0f} s)")
        print(
            f"progress: {self._done()}/{total} done, {self.counts['failed']} failed; "
            f"running: {'; '.join(parts) or 'none'}",
            flush=True,
        )


# --- Slurm launcher --------------------------------------------------------------------------


def _ignore_usr2() -> None:
    # Slurm's --signal=USR2@N (submitit's time-limit warning) reaches every process of the job
    # step; the trainer must not die of it. Its wrapper (TrainTask) turns it into SIGUSR1.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _wait_pid(process: subprocess.Popen, timeout_s: float) -> int | None:
    """Waits for a child with os.waitpid, safe inside a signal handler that interrupted
    Popen.poll (whose lock may be held); returns its exit code, None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.returncode is not None:
            return process.returncode
        try:
            pid, status = os.waitpid(process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            return process.returncode
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode
        time.sleep(0.2)
    return None


def _slurm_job_state(job_id: str) -> str:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


class TrainTask(submitit.helpers.Checkpointable):
    """One array task: runs one train command in a subprocess.

    On submitit's pre-emption/time-limit signal, `checkpoint` sends SIGUSR1 to the trainer
    (which writes a checkpoint and exits 75) and resubmits the same command, which resumes.
    A trainer that exits 75 by itself (SIGTERM from `scontrol requeue`, pre-emption or a
    person) requeues the task if Slurm still counts it as running; otherwise Slurm is already
    requeueing or cancelling it.
    """

    def __init__(self, stop_timeout_s: float = 80.0, max_restarts: int = 100):
        self.stop_timeout_s = stop_timeout_s
        self.max_restarts = max_restarts
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_process"] = None  # a live process does not travel to the next attempt
        return state

    def __call__(self, run: dict[str, Any]) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        where = f"slurm job {env.job_id} on {env.hostname}"
        Path(run["log"]).parent.mkdir(parents=True, exist_ok=True)
        with open(run["log"], "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {where}\n")
            log.flush()
            print(f"{where}: {shlex.join(run['command'])}\nlog: {run['log']}", flush=True)
            self._process = subprocess.Popen(
                run["command"],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                preexec_fn=_ignore_usr2,
            )
            while (code := self._process.poll()) is None:
                time.sleep(1.0)
        print(f"train exited with status {code}", flush=True)
        if code == 0:
            return {"run_dir": run["run_dir"], "status": "finished"}
        if code == EXIT_PREEMPTED:
            self._requeue_if_running()
            sys.exit(EXIT_PREEMPTED)  # SystemExit: submitit records no result, as for requeue
        line = _last_line(Path(run["log"]), "error:") or _last_line(Path(run["log"]))
        raise RuntimeError(f"train exited with status {code}: {line} (log: {run['log']})")

    def _requeue_if_running(self) -> None:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        state = _slurm_job_state(job_id) if job_id else ""
        if state != "RUNNING":
            print(f"pre-empted; Slurm has the job as {state or 'gone'}: not requeueing it")
            return
        if restarts >= self.max_restarts:
            raise RuntimeError(f"pre-empted {restarts} times: not requeueing again")
        print(f"pre-empted: requeueing job {job_id}", flush=True)
        subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=60)

    def checkpoint(self, run: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        """Called by submitit in its signal handler: stop the trainer at a checkpoint first."""
        process = self._process
        if process is not None and process.returncode is None:
            print(f"asking the trainer (pid {process.pid}) to checkpoint and stop", flush=True)
            try:
                process.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                pass
            code = _wait_pid(process, self.stop_timeout_s)
            print(f"trainer stopped with status {code}", flush=True)
        return super().checkpoint(run)


def aggregate_job(sweep_dir: str) -> str:
    """The small Slurm job that runs after the array: writes aggregate.md and .csv."""
    markdown, _ = aggregation.aggregate(Path(sweep_dir))
    print(markdown.read_text(encoding="utf-8"))
    return str(markdown)


@dataclass
class SlurmOptions:
    partition: str | None
    time_min: int
    cpus_per_task: int
    mem_gb: float
    max_parallel: int

    def parameters(self, array_size: int) -> dict[str, Any]:
        """What `update_parameters` gets (submitit names), for the array job."""
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "nodes": 1,
            "tasks_per_node": 1,
            "slurm_array_parallelism": max(1, min(self.max_parallel, array_size)),
            "slurm_setup": [
                f"cd {shlex.quote(str(REPO_ROOT))}",
                f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
            ],
            "slurm_additional_parameters": {"requeue": True},
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        return params

    def describe(self, array_size: int, folder: Path) -> str:
        parallel = max(1, min(self.max_parallel, array_size))
        return " ".join(
            [
                f"--array=0-{array_size - 1}%{parallel}",
                *([f"--partition={self.partition}"] if self.partition else []),
                f"--time={self.time_min}",
                f"--cpus-per-task={self.cpus_per_task}",
                f"--mem={self.mem_gb:g}G",
                "--nodes=1 --ntasks-per-node=1 --requeue --signal=USR2@90 --open-mode=append",
                f"--output={folder}/%A_%a_0_log.out --error={folder}/%A_%a_0_log.err",
                f"(python {sys.executable}, cwd {REPO_ROOT}); then an afterany:<array> job "
                "aggregates",
            ]
        )


def _active_slurm_runs(slurm_dir: Path) -> dict[str, str]:
    """run_dir -> task id, for runs of earlier submissions that are still queued or running."""
    path = slurm_dir / SUBMISSIONS_FILE
    if not path.is_file() or not shutil.which("squeue"):
        return {}
    tasks: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            tasks.update(json.loads(line).get("tasks", {}))
        except json.JSONDecodeError:
            continue
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    active = {line.split("|")[0] for line in out.splitlines() if "|" in line}
    return {run_dir: task for task, run_dir in tasks.items() if task in active}


def submit_slurm(sweep: Sweep, options: SlurmOptions) -> int:
    """Submits the unfinished runs as one array job, then an afterany aggregation job."""
    slurm_dir = sweep.sweep_dir / "slurm"
    active = _active_slurm_runs(slurm_dir)
    todo = []
    for run in sweep.runs:
        if run.finished():
            print(f"{run.run_dir}: already finished")
        elif run.run_dir in active:
            print(f"{run.run_dir}: still queued or running as job {active[run.run_dir]}")
        else:
            todo.append(run)
    if not todo:
        markdown, _ = aggregation.aggregate(sweep.sweep_dir)
        print(f"nothing new to submit; aggregated what the runs logged so far into {markdown}")
        return 0
    executor = submitit.AutoExecutor(folder=slurm_dir, cluster="slurm", slurm_python=sys.executable)
    executor.update_parameters(
        name=f"sweep-{sweep.sweep_dir.name}", **options.parameters(len(todo))
    )
    task = TrainTask()
    with executor.batch():
        jobs = [executor.submit(task, asdict(run)) for run in todo]
    array_id = jobs[0].job_id.split("_")[0]

    after = submitit.AutoExecutor(folder=slurm_dir, cluster="slurm", slurm_python=sys.executable)
    params = {
        "name": f"aggregate-{sweep.sweep_dir.name}",
        "timeout_min": 15,
        "cpus_per_task": 1,
        "mem_gb": 1,
        "slurm_setup": options.parameters(1)["slurm_setup"],
        "slurm_additional_parameters": {"dependency": f"afterany:{array_id}"},
    }
    if options.partition:
        params["slurm_partition"] = options.partition
    after.update_parameters(**params)
    aggregate = after.submit(aggregate_job, str(sweep.sweep_dir))

    tasks = {job.job_id: run.run_dir for job, run in zip(jobs, todo, strict=True)}
    record = {
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "array_job_id": array_id,
        "tasks": tasks,
        "aggregate_job_id": aggregate.job_id,
    }
    with open(slurm_dir / SUBMISSIONS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(f"submitted array job {array_id} ({len(todo)} runs):")
    for job_id, run_dir in tasks.items():
        print(f"  {job_id}: {run_dir}")
    print(f"aggregation job {aggregate.job_id} runs after the array (afterany)")
    print(
        f"Slurm logs: {slurm_dir}/<job id>_0_log.out and .err; each run's trainer output: <run>.log"
    )
    print(
        f"watch: squeue -j {array_id},{aggregate.job_id}; results: {sweep.sweep_dir}/aggregate.md"
    )
    return 0


# --- the command line ------------------------------------------------------------------------


def define_flags() -> None:
    """Flags are defined only for the CLI: importing this module (as a Slurm job unpickling
    TrainTask does, or the gin check child that imports pipeline.train) must not clash."""
    flags.DEFINE_multi_string(
        "gin_file", ["dqn_cartpole.gin"], "Gin file (path or bare name in gin/). Repeatable."
    )
    flags.DEFINE_multi_string("gin_bindings", [], "Gin binding fixed for every run. Repeatable.")
    flags.DEFINE_multi_string(
        "grid", [], "name=v1,v2,...: values to sweep over; several --grid: cartesian product."
    )
    flags.DEFINE_string("seeds", "0", "Seeds for every setting: 0,1,2 or 0-4.")
    flags.DEFINE_string(
        "sweep_dir", None, "Sweep directory; default sweeps/<gin stems>[-<bindings hash>]."
    )
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Run here, or as a Slurm array.")
    flags.DEFINE_integer("parallel", 1, "local: runs at a time.")
    flags.DEFINE_bool("dry_run", False, "Print each run's directory and command; write nothing.")
    flags.DEFINE_bool("aggregate", False, "Only aggregate an existing sweep directory.")
    flags.DEFINE_string("slurm_partition", None, "slurm: partition (default: the cluster's).")
    flags.DEFINE_integer("slurm_time_min", 120, "slurm: time limit per run attempt, minutes.")
    flags.DEFINE_integer("slurm_cpus_per_task", 2, "slurm: CPUs per run.")
    flags.DEFINE_float("slurm_mem_gb", 8.0, "slurm: memory per run, GB.")
    flags.DEFINE_integer("slurm_max_parallel", 64, "slurm: array tasks running at once.")


def only_aggregate() -> int:
    sweep_dir = Path(FLAGS.sweep_dir or default_sweep_dir(FLAGS.gin_file, FLAGS.gin_bindings))
    if not (sweep_dir / SWEEP_FILE).is_file():
        cli.fail(f"{sweep_dir / SWEEP_FILE} not found: pass --sweep_dir of a sweep run before")
    markdown, _ = aggregation.aggregate(sweep_dir)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"wrote {markdown} and {sweep_dir / aggregation.CSV_FILE}")
    return 0


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: pass --grid/--gin_bindings flags")
    if FLAGS.aggregate:
        sys.exit(only_aggregate())
    try:
        if FLAGS.parallel < 1:
            raise SweepError(f"--parallel={FLAGS.parallel}: give 1 or more")
        if FLAGS.launcher == "slurm" and not FLAGS.dry_run and not shutil.which("sbatch"):
            raise SweepError(
                "sbatch not found: run on a Slurm login node, or start a local cluster with "
                "scripts/slurm_local.sh start"
            )
        sweep = build_sweep(
            FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.grid, FLAGS.seeds, FLAGS.sweep_dir
        )
    except SweepError as error:
        cli.fail(str(error))
    options = SlurmOptions(
        partition=FLAGS.slurm_partition,
        time_min=FLAGS.slurm_time_min,
        cpus_per_task=FLAGS.slurm_cpus_per_task,
        mem_gb=FLAGS.slurm_mem_gb,
        max_parallel=FLAGS.slurm_max_parallel,
    )
    settings = len(sweep.runs) // len(sweep.seeds)
    print(
        f"sweep {sweep.sweep_dir}: {len(sweep.runs)} runs "
        f"({settings} settings x {len(sweep.seeds)} seeds), launcher {FLAGS.launcher}"
    )
    if FLAGS.dry_run:
        print_runs(sweep)
        if FLAGS.launcher == "slurm":
            folder = sweep.sweep_dir / "slurm"
            print(f"sbatch parameters: {options.describe(len(sweep.runs), folder)}")
        print("dry run: nothing written")
        return
    try:
        write_sweep_file(sweep)
    except SweepError as error:
        cli.fail(str(error))
    if FLAGS.launcher == "slurm":
        sys.exit(submit_slurm(sweep, options))
    status = LocalLauncher(sweep, FLAGS.parallel).run()
    markdown, _ = aggregation.aggregate(sweep.sweep_dir)
    print(markdown.read_text(encoding="utf-8"), end="")
    print(f"wrote {markdown} and {sweep.sweep_dir / aggregation.CSV_FILE}")
    sys.exit(status)


def run() -> None:
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    # Run through the package module, so TrainTask pickles as pipeline.sweep.TrainTask
    # (importable in a Slurm job), not as __main__.TrainTask.
    from pipeline import sweep as _module

    _module.run()
