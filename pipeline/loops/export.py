"""The exported policy: a SavedModel of the greedy policy, swapped into place atomically."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from pathlib import Path

import tensorflow as tf
from absl import logging
from tf_agents.policies import policy_saver, tf_policy

from pipeline.run import trust
from pipeline.run.checkpoints import WRITE_ERRORS, guarded_write
from pipeline.run.files import fsync_tree, replace_durably

_EXPORT = re.compile(r"^(step-\d+(\.\d+)?|\.step-\d+(\.\d+)?\.partial)$")  # the names it writes


class PolicyExporter:
    """Saves `policy` with its current weights under `<root_dir>/policies/` and points the
    `<root_dir>/policy` link at it.

    Written to `policies/step-N` (through a `.partial` sibling and a rename; a new name
    `step-N.1`, ... if one is there, so the export `policy` points to is never replaced in
    place), then the `policy` symlink is swapped to it in one rename, so a reader of
    `<root_dir>/policy` always finds a complete model. Older exports are removed after.
    Loading it needs only TensorFlow and TF-Agents: `tf.saved_model.load("<root_dir>/policy")`.
    """

    def __init__(self, policy: tf_policy.TFPolicy, train_step: tf.Variable, root_dir: Path):
        self.policy, self.train_step, self.root_dir = policy, train_step, root_dir
        self._saver: policy_saver.PolicySaver | None = None  # traced at the first export
        self._warned_link = False

    def due(self, checkpoint_or_last: bool) -> bool:
        """Exports follow evaluations that are the first, a checkpoint's or the last.

        An export costs about as much as a CartPole evaluation (0.5 s); at every one of a
        run's 21 evaluations it was a tenth of the run. The exported weights are always
        those of the evaluation just played, at that evaluation's step.
        """
        return checkpoint_or_last or not (self.root_dir / "policy").exists()

    def export(self, env_steps: int) -> Path:
        if self._saver is None:
            self._saver = policy_saver.PolicySaver(
                self.policy, batch_size=None, train_step=self.train_step
            )
        folder = self.root_dir / "policies"
        target = _unused_name(folder / f"step-{env_steps:012d}")
        partial = folder / f".{target.name}.partial"
        with guarded_write(f"the policy export {target}"):
            folder.mkdir(exist_ok=True)
            shutil.rmtree(partial, ignore_errors=True)
            try:
                with quiet_saving():
                    self._saver.save(str(partial))
            except WRITE_ERRORS:
                shutil.rmtree(partial, ignore_errors=True)  # give the space back
                raise
            trust.sign_export(partial)
            fsync_tree(partial)  # the SavedModel's files, before the rename publishes them
            replace_durably(partial, target)
            self._point_link_at(target)
        for old in folder.iterdir():
            if old != target and _EXPORT.match(old.name) and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
        return target

    def _point_link_at(self, target: Path) -> None:
        """Swaps the `policy` link to `target` in one rename, if `policy` is such a link.

        Anything else there (a folder made by copying a run with `cp -rL`, a user's file) is
        not the pipeline's to replace: it stays, with one warning, and `policies/` holds the
        export.
        """
        link, current = self.root_dir / ".policy.link", self.root_dir / "policy"
        if current.exists() and not current.is_symlink():
            if not self._warned_link:
                self._warned_link = True
                logging.warning(
                    "%s is not the pipeline's link (a copied folder?): left as it is; the "
                    "newest export is in %s",
                    current,
                    current.parent / "policies",
                )
            return
        link.unlink(missing_ok=True)
        os.symlink(Path("policies") / target.name, link)
        replace_durably(link, current)


@contextlib.contextmanager
def quiet_saving():
    """Hides the SavedModel writer's notices (renamed inputs, untraced functions, ...)."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)


def _unused_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... if it exists (a re-export at the same step)."""
    candidate, index = path, 0
    while candidate.exists():
        index += 1
        candidate = path.with_name(f"{path.name}.{index}")
    return candidate
