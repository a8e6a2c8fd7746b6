"""Checkpoints that are complete or ignored.

A checkpoint is a directory `ckpt-<env steps>` under `<root_dir>/checkpoints/`. It is written
as `.ckpt-<env steps>.partial`, every file is fsynced, a MANIFEST.json with each file's size
and SHA-256 is written last, and only then is the directory renamed into place. A directory
without a manifest is a torn write and is never read; one whose files do not match their
manifest is corrupt, and loading falls back to the previous complete checkpoint with a
warning. The newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import tensorflow as tf
from absl import logging

from pipeline.errors import UserError
from pipeline.run import plain_data, trust
from pipeline.run.files import fsync_path, replace_durably
from pipeline.run.versions import PICKLED_ENV_PACKAGES, changed, package_versions

MANIFEST = "MANIFEST.json"
ENV_STATES = "env.npz"  # the training envs' states (`plain_data.save`: plain data, signed pickles)
TIME_STEP = "time_step.npz"  # the training envs' last time step (plain data)
ENV_VERSIONS = "env_versions.json"  # the versions of the packages the env states come from
# Unsigned pickles of checkpoints written before pickles were signed: loaded only when trusted.
LEGACY_ENV_STATES, LEGACY_TIME_STEP = "env.pkl", "time_step.pkl"
UNSIGNED = "pickles without a signature (from before checkpoints signed them, or not yours)"
_NAME = re.compile(r"^ckpt-(\d+)$")
T = TypeVar("T")


# What a failed write raises: Python's file calls raise OSError, TensorFlow's (checkpoints,
# SavedModels, TensorBoard events) raise tf.errors.OpError subclasses.
WRITE_ERRORS = (OSError, tf.errors.OpError)


class WriteError(RuntimeError):
    """A write into the run directory failed (full disk, permissions); the checkpoints
    written before it are intact, so the same command resumes once the cause is fixed."""


class CheckpointError(WriteError):
    """Writing a checkpoint failed; the previous ones are intact."""


def reason(error: BaseException) -> str:
    """The cause of a failed write in a few words ("No space left on device")."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = (getattr(error, "message", None) or str(error)).strip()
    text = re.sub(r"\{\{.*?\}\}\s*", "", text.splitlines()[0] if text else "")
    text = re.sub(r"\s*\[Op:\w+\]$", "", text)
    return text.rsplit("; ", 1)[-1] or type(error).__name__  # TF puts the file path first


@contextlib.contextmanager
def guarded_write(what: str):
    """Turns a failed write of `what` into one `WriteError` line."""
    try:
        yield
    except WriteError:
        raise
    except WRITE_ERRORS as error:
        raise WriteError(f"writing {what} failed ({reason(error)})") from error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


REPLAY = "replay/"  # the replay's files in a checkpoint: the one part a resume can rebuild


def problems(directory: Path) -> dict[str, str]:
    """{file: what is wrong with it} against the manifest; empty when all match.

    "" stands for the manifest itself when it cannot be read.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {"": f"unreadable manifest ({error})"}
    files = {str(p.relative_to(directory)): p for p in _files(directory)}
    found = {name: "not in the manifest" for name in set(files) - set(manifest)}
    found.update({name: "missing" for name in set(manifest) - set(files)})
    for name in sorted(set(manifest) & set(files)):
        path, expected = files[name], manifest[name]
        if path.stat().st_size != expected["size"]:
            found[name] = f"has {path.stat().st_size} bytes, the manifest says {expected['size']}"
        elif _sha256(path) != expected["sha256"]:
            found[name] = "does not match its checksum"
    return found


def verify(directory: Path) -> str | None:
    """None if every file matches the manifest, else what is wrong (for the warning)."""
    found = problems(directory)
    return _describe(found) if found else None


def _describe(found: dict[str, str]) -> str:
    name = min(found)
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{name} {found[name]}{more}".strip()


class CheckpointStore:
    def __init__(self, directory: Path, keep: int = 3):
        if keep < 1:
            raise UserError(f"train.checkpoints_to_keep must be >= 1, got {keep}: fix the binding")
        self.directory = Path(directory)
        self.keep = keep

    @staticmethod
    def _replaced(final: Path) -> Path:
        return final.parent / f".{final.name}.replaced"

    def _recover_replaced(self) -> None:
        """Puts back a checkpoint moved aside by a replacement that a kill interrupted."""
        for aside in self.directory.glob(".ckpt-*.replaced"):
            final = self.directory / aside.name[1 : -len(".replaced")]
            if (final / MANIFEST).is_file():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                shutil.rmtree(final, ignore_errors=True)
                replace_durably(aside, final)

    def complete(self) -> list[tuple[int, Path]]:
        """(env steps, path) of the checkpoints with a manifest, newest first."""
        if not self.directory.is_dir():
            return []
        self._recover_replaced()
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and (path / MANIFEST).is_file():
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def save(self, env_steps: int, write: Callable[[Path], dict | None]) -> Path:
        """Runs `write(tmp_dir)`, then seals and renames it; raises CheckpointError on OSError.

        `write` may return {relative path: {"size", "sha256", "durable"}} for files whose
        checksum it knows (computed as it wrote them, or hard links to a sealed checkpoint's
        files, which are "durable": already fsynced): those are not read back.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".ckpt-*.partial"):  # torn writes of killed runs
            shutil.rmtree(stale, ignore_errors=True)
        final = self.directory / f"ckpt-{env_steps:012d}"
        tmp = self.directory / f".{final.name}.partial"
        try:
            tmp.mkdir()
            known = write(tmp)
            known = known if isinstance(known, dict) else {}
            files = {}
            for path in _files(tmp):
                name, size = str(path.relative_to(tmp)), path.stat().st_size
                entry = known.get(name)
                if entry is None or entry["size"] != size:
                    entry = {"sha256": _sha256(path), "durable": False}
                if not entry.get("durable"):
                    fsync_path(path)
                files[name] = {"size": size, "sha256": entry["sha256"]}
            manifest = tmp / MANIFEST
            with open(manifest, "w", encoding="utf-8") as f:
                json.dump({"env_steps": env_steps, "files": files}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
                fsync_path(sub)
            aside = self._replaced(final)
            if final.exists():  # a checkpoint at the same step: moved aside, never deleted first
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(final, aside)
            replace_durably(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        except WRITE_ERRORS as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"writing the checkpoint at {env_steps:,} env steps in {self.directory} failed "
                f"({reason(error)}); the previous checkpoints are intact"
            ) from error
        for _, old in self.complete()[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def checksums(path: Path, prefix: str = "") -> dict[str, str]:
        """{file name under `prefix`: sha256} from a sealed checkpoint's manifest."""
        manifest = json.loads((path / MANIFEST).read_text())["files"]
        return {
            name[len(prefix) :]: entry["sha256"]
            for name, entry in manifest.items()
            if name.startswith(prefix)
        }

    def load_latest(self, read: Callable[[Path, bool], T]) -> tuple[int, T] | None:
        """`read(path, replay_intact)` the newest checkpoint that verifies and loads; None if
        there is none.

        A corrupt checkpoint (or one `read` rejects) is skipped with a warning; if every
        checkpoint is unusable the run cannot resume, which is an error, not a restart. A
        checkpoint whose only bad files are its replay's still loads, with `replay_intact`
        False: unchanged replay chunks are hard links shared by every kept checkpoint, so
        one bad byte there would otherwise cost them all, though their weights are intact.
        """
        candidates = self.complete()
        unusable = []
        for env_steps, path in candidates:
            found = problems(path)
            replay_intact = not any(name.startswith(REPLAY) for name in found)
            if found and all(name.startswith(REPLAY) for name in found):
                logging.warning(
                    "checkpoint %s: %s; resuming from its weights, optimizer, counters and RNG "
                    "with a refilled replay (no longer an exact resume of the run)",
                    path,
                    _describe(found),
                )
                found = {}
            problem = _describe(found) if found else None
            if problem is None:
                try:
                    loaded = read(path, replay_intact)
                except Exception as error:  # noqa: BLE001 - any failure means: try the previous
                    problem = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                else:
                    self._move_aside(unusable)
                    return env_steps, loaded
            logging.warning(
                "checkpoint %s is unusable (%s); falling back to the previous one", path, problem
            )
            unusable.append(path)
        if candidates:
            raise UserError(
                f"no usable checkpoint in {self.directory} ({len(candidates)} corrupt): move the "
                "run directory away to start over"
            )
        return None

    def _move_aside(self, unusable: list[Path]) -> None:
        """Newer checkpoints that failed, once an older one loaded: renamed `corrupt-*`, so
        they no longer take a keep slot (kept for a post-mortem, never read again)."""
        for path in unusable:
            aside = path.with_name(f"corrupt-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            replace_durably(path, aside)
            logging.warning("moved the unusable checkpoint %s to %s", path, aside)


def save_replay(store: CheckpointStore, replay, directory: Path, contents: bool) -> dict:
    """`replay.save` into `directory/replay`, next to the store's newest checkpoint (whose
    unchanged parts it may link); returns the checksums it knows, as `write` hands them on."""
    (directory / "replay").mkdir()
    newest = store.complete()[:1]
    previous = newest[0][1] / "replay" if newest else None
    sums = store.checksums(newest[0][1], "replay/") if newest else None
    known = replay.save(directory / "replay", contents, previous=previous, previous_sums=sums)
    return {f"replay/{name}": entry for name, entry in (known or {}).items()}


# --- what a loop's checkpoint holds besides the replay ----------------------------------


def write_loop_state(
    directory: Path,
    variables: tf.train.Checkpoint,
    windows: tf.train.Checkpoint,
    env_states: list | None,
    time_step,
    loop: dict,
) -> None:
    """TF variables, the train metrics' windows, the training envs' states (None: they
    cannot be saved), the last time step (numpy arrays) and the loop's counters.

    All of it is data a reader never executes: TF checkpoints, JSON and `plain_data.save`'s .npz
    files, whose only pickles (whole gymnasium envs) are signed with the user's secret.
    """
    variables.write(str(directory / "tf" / "state"))
    windows.write(str(directory / "tf" / "metric_windows"))
    if env_states is not None:  # plain data; a whole env pickled in it is signed
        plain_data.save(directory / ENV_STATES, list(env_states))
        versions = package_versions(PICKLED_ENV_PACKAGES)
        (directory / ENV_VERSIONS).write_text(json.dumps(versions, indent=2) + "\n")
    if time_step is not None:
        plain_data.save(directory / TIME_STEP, time_step)
    (directory / "loop.json").write_text(json.dumps(loop, indent=2) + "\n")


def read_loop_state(
    directory: Path, variables: tf.train.Checkpoint, windows: tf.train.Checkpoint
) -> tuple[dict, Any, list | None]:
    """Restores `write_loop_state`'s variables and windows; returns the loop's counters, the
    saved time step (None if not saved) and the env states (None if not saved).

    A pickle this user did not sign (another user's, or any from before pickles were signed)
    is not loaded unless --trust_run_dir: the resume starts new episodes with one warning."""
    variables.read(str(directory / "tf" / "state")).assert_consumed()
    if (directory / "tf" / "metric_windows.index").exists():  # not before 2026-12-01
        windows.read(str(directory / "tf" / "metric_windows")).assert_consumed()
    loop = json.loads((directory / "loop.json").read_text())
    trusted, refused = trust.run_dir_trusted(), []
    time_step = _read_time_step(directory, trusted, refused)
    env_states = None
    saved = [directory / name for name in (ENV_STATES, LEGACY_ENV_STATES)]
    if any(path.exists() for path in saved) and _env_stack_unchanged(directory):
        env_states = _read_env_states(directory, trusted, refused)
    if env_states is not None and time_step is None:  # the envs go on only from their step
        refused.append((ENV_STATES, "its time step is not loaded"))
        env_states = None
    if refused:  # one line for all, as a resume under another stack warns
        reasons: dict[str, list[str]] = {}
        for name, why in refused:
            reasons.setdefault(why, []).append(name)
        logging.warning(
            "checkpoint %s: not loading %s; new episodes start (pass --trust_run_dir to load "
            "what is not signed if you trust this run directory)",
            directory,
            "; ".join(f"{' and '.join(names)}: {why}" for why, names in reasons.items()),
        )
    return loop, time_step, env_states


def _read_time_step(directory: Path, trusted: bool, refused: list[tuple[str, str]]) -> Any:
    """The saved time step (None if absent or refused: why goes into `refused`)."""
    path, legacy = directory / TIME_STEP, directory / LEGACY_TIME_STEP
    try:
        if path.exists():
            return plain_data.load(path, trusted=trusted)
        if legacy.exists():
            if trusted:
                return pickle.loads(legacy.read_bytes())
            refused.append((legacy.name, UNSIGNED))
    except ValueError as error:  # UntrustedPickle too
        refused.append((path.name, str(error)))
    return None


def _read_env_states(directory: Path, trusted: bool, refused: list[tuple[str, str]]) -> list | None:
    """The training envs' states, each `get_state()`'s bytes, with every pickle in them
    signed by this user; None (and why in `refused`) where one is not and the run directory
    is not trusted. Trusted ones are signed again here, so `set_state` takes them."""
    path, legacy = directory / ENV_STATES, directory / LEGACY_ENV_STATES
    if not path.exists():
        if not trusted:
            refused.append((legacy.name, UNSIGNED))
            return None
        states = pickle.loads(legacy.read_bytes())  # the user vouched for it
        return [plain_data.dumps({"legacy": plain_data.Pickled(state)}) for state in states]
    try:
        states = plain_data.load(path)
        if not isinstance(states, list) or not all(isinstance(s, bytes) for s in states):
            raise ValueError("not a list of env states")
        checked = []
        for state in states:
            try:
                plain_data.loads(state)
            except plain_data.UntrustedPickle:
                if not trusted:
                    raise
                state = plain_data.dumps(plain_data.loads(state, trusted=True))
            checked.append(state)
    except ValueError as error:  # UntrustedPickle too
        refused.append((path.name, str(error)))
        return None
    return checked


def _env_stack_unchanged(directory: Path) -> bool:
    """Whether the packages that pickled the envs' states are the ones installed now.

    Checkpoints before 2026-12-04 did not record them: the run's first session did, in
    run.json. Under another version an env unpickles into an object that breaks at its next
    step (gymnasium 1.4 reads attributes 1.3's wrappers never set), so the resume starts new
    episodes instead, which loses the ends of the current ones and nothing else.
    """
    recorded = directory / ENV_VERSIONS
    run_json = directory.parent.parent / "run.json"
    if recorded.exists():
        saved = json.loads(recorded.read_text())
    elif run_json.exists():
        saved = json.loads(run_json.read_text()).get("versions", {})
    else:
        saved = {}
    changes = changed(saved, PICKLED_ENV_PACKAGES)
    if changes:
        logging.warning(
            "the train envs' states were saved under another stack (%s): new episodes start, "
            "so this resume is not bit-identical to an uninterrupted run",
            ", ".join(changes),
        )
    return not changes


def read_variables(
    store: CheckpointStore, variables: tf.train.Checkpoint, env_steps: int | None = None
) -> int:
    """Reads `variables` (weights, counters; not the replay or the envs) from the complete
    checkpoint at `env_steps`, or the newest one. Returns that checkpoint's env steps."""
    saved = dict(store.complete())
    root_dir = store.directory.parent
    if not saved:
        raise UserError(f"{root_dir} has no complete checkpoint yet")
    steps = max(saved) if env_steps is None else env_steps
    if steps not in saved:
        have = ", ".join(f"{s:,}" for s in sorted(saved))
        raise UserError(f"no checkpoint at {steps:,} env steps in {root_dir}: have {have}")
    try:
        variables.read(str(saved[steps] / "tf" / "state")).expect_partial()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(f"checkpoint {saved[steps]} cannot be read: {error}") from None
    return steps
