"""Published Atari 100k figures the suite report compares against: random and human scores
(for human normalization) and DrQ(ε)'s per-game statistics and raw runs
(`data/published/atari100k_games.csv`, `atari100k_drq_eps_runs.csv`; sources and meaning of
each column in `data/published/anchors.md`, "Atari 100k, per game"). No TensorFlow."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "data" / "published"
GAMES_CSV = PUBLISHED_DIR / "atari100k_games.csv"
DRQ_EPS_RUNS_CSV = PUBLISHED_DIR / "atari100k_drq_eps_runs.csv"

# The 26 games as ale-py names (`gymnasium.make(f"ALE/{game}-v5")`), in the CSV's order.
ATARI100K_GAMES: tuple[str, ...] = (
    "Alien",
    "Amidar",
    "Assault",
    "Asterix",
    "BankHeist",
    "BattleZone",
    "Boxing",
    "Breakout",
    "ChopperCommand",
    "CrazyClimber",
    "DemonAttack",
    "Freeway",
    "Frostbite",
    "Gopher",
    "Hero",
    "Jamesbond",
    "Kangaroo",
    "Krull",
    "KungFuMaster",
    "MsPacman",
    "Pong",
    "PrivateEye",
    "Qbert",
    "RoadRunner",
    "Seaquest",
    "UpNDown",
)


@dataclass(frozen=True)
class GameReference:
    """One row of `atari100k_games.csv`: scores are game returns of the evaluation after 100k
    agent steps, one number per run; DrQ(ε)'s statistics are over its 100 released runs, the
    CIs 95% percentile bootstraps over those runs."""

    game: str
    ale_rom_id: str
    random: float
    human: float
    drq_eps_runs: int
    drq_eps_mean: float
    drq_eps_median: float
    drq_eps_iqm: float
    drq_eps_q25: float
    drq_eps_q75: float
    drq_eps_min: float
    drq_eps_max: float
    drq_eps_mean_ci_low: float
    drq_eps_mean_ci_high: float
    drq_eps_iqm_ci_low: float
    drq_eps_iqm_ci_high: float
    drq_eps_hns_mean: float
    spr_runs: int
    spr_mean: float
    spr_median: float
    spr_iqm: float
    simple_runs: int
    simple_mean: float
    efficientzero: float


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@functools.lru_cache(maxsize=4)
def load_references(path: Path = GAMES_CSV) -> dict[str, GameReference]:
    """The per-game references keyed by ale-py name, in `ATARI100K_GAMES` order; a file whose
    games or columns differ is an error rather than a silently shorter suite."""
    rows = _read_csv(Path(path))
    types = {f.name: f.type for f in fields(GameReference)}
    missing = [name for name in types if rows and name not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    games = tuple(row["game"] for row in rows)
    if games != ATARI100K_GAMES:
        raise ValueError(f"{path}: games {games} are not the 26 Atari 100k games in order")
    convert = {"str": str, "int": int, "float": float}
    return {
        row["game"]: GameReference(**{k: convert[t](row[k]) for k, t in types.items()})
        for row in rows
    }


@functools.lru_cache(maxsize=4)
def load_drq_eps_runs(path: Path = DRQ_EPS_RUNS_CSV) -> dict[str, np.ndarray]:
    """DrQ(ε)'s released final scores per game (100 runs each, in `run_index` order): the
    published side of the report's aggregates, which need runs, not per-game summaries."""
    by_game: dict[str, list[tuple[int, float]]] = {}
    for row in _read_csv(Path(path)):
        by_game.setdefault(row["game"], []).append((int(row["run_index"]), float(row["score"])))
    if tuple(by_game) != ATARI100K_GAMES:
        raise ValueError(f"{path}: games {tuple(by_game)} are not the 26 Atari 100k games")
    runs = {}
    for game, pairs in by_game.items():
        scores = np.array([score for _, score in sorted(pairs)], dtype=float)
        scores.flags.writeable = False  # cached: shared by every caller
        runs[game] = scores
    return runs


def check_game(game: str) -> str:
    """`game` if it is one of the 26 (ale-py spelling); otherwise a ValueError naming them, so
    a typo such as "Pacman" fails loudly instead of being dropped from the suite."""
    if game not in ATARI100K_GAMES:
        raise ValueError(
            f"{game!r} is not an Atari 100k game (ale-py names: {', '.join(ATARI100K_GAMES)})"
        )
    return game


def human_normalized(game: str, score: float | np.ndarray) -> float | np.ndarray:
    """(score - random) / (human - random) with Dopamine's random and human scores: 0 plays
    like a random policy, 1 like the human reference; the scale the suite aggregates use."""
    ref = load_references()[check_game(game)]
    normalized = (np.asarray(score, dtype=float) - ref.random) / (ref.human - ref.random)
    return float(normalized) if normalized.ndim == 0 else normalized
