"""The Reverb replay server: transitions, the newest weights and episode summaries.

    python -m pipeline.distributed.server --gin_file=dqn_cartpole.gin --root_dir=RUN --port=8000 \
        --gin_bindings=DqnAgent.n_step_update=1

The tables follow from the gin files (see `common.build_tables`). The server checkpoints its
tables into `<root_dir>/reverb/` every `distributed.server_checkpoint_interval_s` and when it
is stopped (SIGTERM, SIGINT, SIGUSR1); started again on the same `root_dir` it loads the
newest complete one, so the replay and the rate limiter's counts survive a restart.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import reverb
from absl import flags, logging

from pipeline import cli, config
from pipeline.distributed import common
from pipeline.errors import UserError
from pipeline.run import rundir
from pipeline.run.preemption import PreemptionFlag

flags.DEFINE_integer(
    "port", None, "Port to listen on: every interface, unauthenticated (Reverb binds [::])."
)
cli.define_run_flags()
FLAGS = flags.FLAGS

CHECKPOINTS_KEPT = 2


def prune_checkpoints(folder: Path, keep: int = CHECKPOINTS_KEPT) -> None:
    """Reverb keeps every checkpoint; we keep the newest `keep` complete ones."""
    complete = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "DONE").exists())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def serve(root_dir: Path, port: int, stop: PreemptionFlag) -> None:
    experiment = common.RoleExperiment(root_dir)
    config_ = common.settings()
    tables = common.build_tables(experiment, config_)
    common.check_port_free(port)
    folder = rundir.prepare(root_dir) / "reverb"
    folder.mkdir(exist_ok=True)
    try:
        server = reverb.Server(
            tables, port=port, checkpointer=reverb.checkpointers.DefaultCheckpointer(str(folder))
        )
    except ValueError as error:  # gRPC could not bind after all (a race for the port)
        raise UserError(f"cannot listen on port {port} ({error}): pick another --port") from None
    client = reverb.Client(f"localhost:{port}")
    info = client.server_info(timeout=30)[common.REPLAY_TABLE]
    logging.info(
        "replay server on port %d: %s transitions (of %s) restored from %s; samples per insert "
        "%.3g",
        port,
        f"{info.current_size:,}",
        f"{info.max_size:,}",
        folder,
        info.rate_limiter_info.samples_per_insert,
    )
    print(f"serving on port {port} (every interface, no authentication)", flush=True)
    last_checkpoint = time.monotonic()
    while not stop.requested:
        time.sleep(0.2)
        if time.monotonic() - last_checkpoint >= config_.server_checkpoint_interval_s:
            logging.info("checkpoint: %s", client.checkpoint())
            prune_checkpoints(folder)
            last_checkpoint = time.monotonic()
    logging.info("stopping on %s; checkpoint: %s", stop.signal_name, client.checkpoint())
    prune_checkpoints(folder)
    server.stop()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    stop = PreemptionFlag().__enter__()
    try:
        config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
        if FLAGS.port is None or not FLAGS.root_dir:
            raise UserError("--port and --root_dir are required: the address and the run directory")
        serve(Path(FLAGS.root_dir), FLAGS.port, stop)
    except UserError as error:
        cli.fail(str(error).splitlines()[0])
    sys.exit(0)


if __name__ == "__main__":
    cli.run(main)
