"""FrameStackReplay's checkpoint: its arrays in chunk files, unchanged chunks shared with the
previous checkpoint (by checksum), so a checkpoint writes only what changed."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from pipeline.replay import read_replay_info, write_replay_info


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` in .npy format, in memory: written once and hashed from the same bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    return buffer.getvalue()


class ChunkedFiles:
    """The save/restore half of `FrameStackReplay` (a mixin: it reads the buffer's arrays)."""

    def save(
        self, directory: Path, contents: bool, previous: Path | None = None,
        previous_sums: dict[str, str] | None = None,
    ) -> dict[str, dict]:  # fmt: skip
        """The filled part of each ring in chunks of `chunk_items` items (one .npy file per
        array and chunk), the RNG state as JSON.

        A chunk unchanged since the checkpoint in `previous` (whose manifest gave
        `previous_sums`) is hard-linked from there, not written: a checkpoint then costs the
        chunks written since the last one, not the whole replay, and checkpoints share the
        disk of what they have in common. Returns what the checkpoint store need not read
        back: {file name: {"size", "sha256", "durable"}} (linked files are durable already).
        """
        known: dict[str, dict] = {}
        with self._lock:
            filled = min(self._count, self.per_lane)
            if contents:
                for chunk in range(-(-filled // self.chunk_items)):
                    known.update(
                        self._save_chunk(directory, chunk, filled, previous, previous_sums or {})
                    )
            info = {"contents": contents, "count": self._count, "per_lane": self.per_lane}
            info["chunk_items"] = self.chunk_items
            write_replay_info(directory, {**info, "rng": self._rng.bit_generator.state})
        return known

    def _chunk_arrays(self, chunk: int, filled: int) -> dict[str, np.ndarray]:
        items = slice(chunk * self.chunk_items, min((chunk + 1) * self.chunk_items, filled))
        arrays = {f"frames.{chunk:05d}.npy": self._frames[:, items]}
        for i, array in enumerate(self._fields):
            if array is not None:
                arrays[f"field_{i}.{chunk:05d}.npy"] = array[:, items]
        return arrays

    def _save_chunk(
        self, directory: Path, chunk: int, filled: int, previous: Path | None,
        previous_sums: dict[str, str],
    ) -> dict[str, dict]:  # fmt: skip
        arrays = self._chunk_arrays(chunk, filled)
        saved = self._saved.get(chunk)
        if (
            previous is not None
            and saved is not None
            and all(previous_sums.get(name) == saved.get(name) for name in arrays)
        ):
            try:
                for name in arrays:
                    os.link(previous / name, directory / name)
            except OSError:  # another filesystem, or the previous one is gone: write it
                for name in arrays:
                    (directory / name).unlink(missing_ok=True)
            else:
                return {
                    name: {"size": (directory / name).stat().st_size, "sha256": saved[name],
                           "durable": True}
                    for name in arrays
                }  # fmt: skip
        known = {}
        for name, array in arrays.items():
            data = npy_bytes(array)
            (directory / name).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            known[name] = {"size": len(data), "sha256": digest, "durable": False}
        self._saved[chunk] = {name: entry["sha256"] for name, entry in known.items()}
        return known

    def restore(self, directory: Path, sums: dict[str, str] | None = None) -> bool:
        """Reads what `save` wrote (also the single-file layout of older checkpoints).

        `sums` (file name -> sha256 from the checkpoint's verified manifest) marks the chunks
        read as saved, so the next checkpoint can link them.
        """
        info = read_replay_info(directory)
        with self._lock:
            self._rng.bit_generator.state = info["rng"]
            self._saved = {}
            if not info["contents"]:
                return False
            if info["per_lane"] != self.per_lane:
                raise ValueError(f"replay ring of {info['per_lane']} items, now {self.per_lane}")
            filled = min(info["count"], self.per_lane)
            if (directory / "frames.npy").exists():  # one file per array (before 2026-12-01)
                self._frames[:, :filled] = np.load(directory / "frames.npy", mmap_mode="r")
                for i, array in enumerate(self._fields):
                    if array is not None:
                        array[:, :filled] = np.load(directory / f"field_{i}.npy", mmap_mode="r")
            else:
                self._restore_chunks(directory, filled, int(info["chunk_items"]), sums)
            self._count = info["count"]
        return True

    def _restore_chunks(
        self, directory: Path, filled: int, chunk_items: int, sums: dict[str, str] | None
    ) -> None:
        for chunk in range(-(-filled // chunk_items)):
            items = slice(chunk * chunk_items, min((chunk + 1) * chunk_items, filled))
            names = [f"frames.{chunk:05d}.npy"]
            self._frames[:, items] = np.load(directory / names[0], mmap_mode="r")
            for i, array in enumerate(self._fields):
                if array is not None:
                    names.append(f"field_{i}.{chunk:05d}.npy")
                    array[:, items] = np.load(directory / names[-1], mmap_mode="r")
            if sums is not None and chunk_items == self.chunk_items:
                self._saved[chunk] = {name: sums[name] for name in names if name in sums}
