"""Grid x seeds sweeps of `pipeline.train`, run here or as one Slurm array job.

    python -m pipeline.sweep --gin_file=dqn_cartpole.gin \
        --grid='train.batch_size=32,64' --grid='Adam.learning_rate=1e-3,1e-4' \
        --seeds=0-2 [--launcher=slurm] [--parallel=2] [--dry_run] [--aggregate]

Every run is one unchanged `python -m pipeline.train` command whose `--root_dir` is derived
from its settings only (`<sweep_dir>/<setting slug>/s<seed>`), so running the same sweep
again skips finished runs and resumes unfinished ones: resume is the trainer's job, and the
sweep never has to remember what it did. Gin settings are checked (in a child process that
imports the trainer's configurables, as `pipeline.train` does) before anything is written.

Modules: `grid` (flags to run names and commands), `gin_check` (strict parsing in a child
process), `plan` (runs, sweep.json), `local` and `slurm` (launchers), `__main__` (the CLI).
"""
