"""Runs a sweep's train commands on this machine, a few at a time."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.analysis.runs import read_evaluations
from pipeline.run.preemption import EXIT_PREEMPTED
from pipeline.sweep import usage
from pipeline.sweep.grid import child_env
from pipeline.sweep.plan import Run, Sweep, last_line


def _log_header(log: Any, run: Run, where: str) -> None:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {where}: {shlex.join(run.command)}\n")
    log.flush()


class LocalLauncher:
    """Runs the sweep's train commands here, `parallel` at a time.

    Children get their own session, so a terminal's Ctrl-C reaches only this process, which
    forwards it (and SIGTERM) once to every child: each writes a checkpoint and exits 75.
    Each attempt's wall time and its trainer's peak memory go to `<run log>.usage.jsonl`
    (`pipeline.sweep.usage`); `on_exit(run, exit code)`, if given, is called as each run ends
    (the Atari-100k suite archives a finished run's record there, before the next one starts).
    """

    def __init__(
        self,
        sweep: Sweep,
        parallel: int,
        progress_interval_s: float = 30.0,
        on_exit: Callable[[Run, int], None] | None = None,
    ):
        self.sweep = sweep
        self.parallel = parallel
        self.progress_interval_s = progress_interval_s
        self.on_exit = on_exit
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
            env=child_env(),
            start_new_session=True,
        )
        self.running[process.pid] = (run, process, time.monotonic(), log)

    def _done(self) -> int:
        return sum(self.counts.values())

    def _reap(self, total: int) -> None:
        for pid, (run, process, started, log) in list(self.running.items()):
            reaped = usage.reap(process)
            if reaped is None:
                continue
            code, peak_rss_mb = reaped
            log.close()
            del self.running[pid]
            seconds = time.monotonic() - started
            usage.record(run.log, "local", seconds, code, peak_rss_mb)
            if code == 0:
                self.counts["finished"] += 1
                line = last_line(Path(run.log), "final eval return")
                status = f"finished in {seconds:.0f} s: {line}"
            elif code == EXIT_PREEMPTED:
                self.counts["preempted"] += 1
                status = "pre-empted (checkpoint written; resumes when the sweep runs again)"
            elif self.stop_signal is not None:  # stopped before it could take the signal
                self.counts["preempted"] += 1
                status = f"stopped (exit status {code}); runs again with the sweep"
            else:
                self.counts["failed"] += 1
                line = last_line(Path(run.log), "error:") or last_line(Path(run.log))
                status = f"FAILED (exit status {code}): {line}; log: {run.log}"
                self.failures.append(run.run_dir)
            print(f"[{self._done()}/{total}] {run.run_dir} {status}", flush=True)
            if self.on_exit is not None:
                self.on_exit(run, code)

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
            evaluated = read_evaluations(Path(run.root_dir))[0]
            steps = f"{int(evaluated[-1]):,} env steps" if len(evaluated) else "starting"
            parts.append(f"{run.run_dir} ({steps}, {time.monotonic() - started:.0f} s)")
        print(
            f"progress: {self._done()}/{total} done, {self.counts['failed']} failed; "
            f"running: {'; '.join(parts) or 'none'}",
            flush=True,
        )
