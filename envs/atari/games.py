"""Atari games by name: the ROM lookup with close-match errors, and the reset actions."""

from __future__ import annotations

import difflib
import functools

import ale_py
import gymnasium as gym
from ale_py import roms

from pipeline.errors import UnknownEnvError

gym.register_envs(ale_py)
# A quiet start: without this every ALE instance prints its version banner to stderr.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)

RAW_SHAPE = (210, 160)  # every ALE game's screen, height x width


def _normalize(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


@functools.cache
def _games() -> dict[str, tuple[str, str]]:
    """Normalized name -> (gymnasium name as in ALE/<name>-v5, ROM id for the C++ env)."""
    rom_ids = {_normalize(rom): rom for rom in roms.get_all_rom_ids()}
    games = {}
    for env_id in gym.registry:
        if env_id.startswith("ALE/") and env_id.endswith("-v5"):
            name = env_id[len("ALE/") : -len("-v5")]
            if _normalize(name) in rom_ids:
                games[_normalize(name)] = (name, rom_ids[_normalize(name)])
    return games


def resolve_game(game: str) -> tuple[str, str]:
    """Returns (gymnasium name, ROM id) for `game` in any case ("Breakout", "ms_pacman").

    Fails with one line naming close matches when ALE has no such game.
    """
    games = _games()
    if _normalize(game) in games:
        return games[_normalize(game)]
    names = sorted(name for name, _ in games.values())
    matches = difflib.get_close_matches(game, names, n=3, cutoff=0.6)
    if not matches:
        matches = [games[k][0] for k in difflib.get_close_matches(_normalize(game), games, n=3)]
    hint = f"did you mean {', '.join(matches)}?" if matches else "see ale_py.roms.get_all_rom_ids()"
    raise UnknownEnvError(f"unknown Atari game {game!r}: {hint}")


def pseudo_reset_action(action_set: list[ale_py.Action]) -> int:
    """Index of FIRE (the life-loss pseudo-reset presses it) or of NOOP without FIRE."""
    if ale_py.Action.FIRE in action_set:
        return action_set.index(ale_py.Action.FIRE)
    return action_set.index(ale_py.Action.NOOP)


def noop_action(action_set: list[ale_py.Action]) -> int:
    """Index of NOOP: the pseudo-reset action when nothing presses FIRE for the agent."""
    return action_set.index(ale_py.Action.NOOP)
