"""One seed of Stable-Baselines3's tuned RL-Zoo DQN on CartPole-v1, under our protocol.

Run by `cartpole_vs_sb3.py` in SB3's own virtual environment (PyTorch is not one of our
dependencies); it prints one JSON line. The protocol is dqn_cartpole.gin's: 50k env steps,
the deterministic (greedy) policy evaluated on 20 episodes every 2,500 steps and at step 0,
no early stopping. Eval episodes start from fixed reset seeds (seed * 1000 + i), as ours do.
`wall_s` of each evaluation counts from this script's start, imports included, as the
pipeline's timestamps count from its process start.
"""

import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

ZOO_CARTPOLE = dict(  # rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)


def greedy_returns(model: DQN, env: gym.Env, seeds: list[int]) -> list[float]:
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


class Evaluations(BaseCallback):
    """Greedy evaluation every `interval` env steps; records (steps, mean, wall)."""

    def __init__(self, env: gym.Env, seeds: list[int], interval: int):
        super().__init__()
        self.env, self.seeds, self.interval = env, seeds, interval
        self.rows: list[dict] = []

    def record(self) -> None:
        returns = greedy_returns(self.model, self.env, self.seeds)
        self.rows.append(
            {
                "env_steps": int(self.model.num_timesteps),
                "eval_return_mean": float(np.mean(returns)),
                "wall_s": round(time.time() - START, 2),
            }
        )

    def _on_step(self) -> bool:
        if self.model.num_timesteps % self.interval == 0:
            self.record()
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--eval_interval", type=int, default=2_500)
    parser.add_argument("--eval_episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seeds = [args.seed * 1000 + i for i in range(args.eval_episodes)]
    evaluations = Evaluations(gym.make("CartPole-v1"), seeds, args.eval_interval)
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=args.seed, verbose=0, **ZOO_CARTPOLE)
    evaluations.model = model
    evaluations.record()  # step 0, as eval_at_start
    model.learn(total_timesteps=args.budget, callback=evaluations)
    print(
        json.dumps(
            {
                "seed": args.seed,
                "rows": evaluations.rows,
                "wall_s": round(time.time() - START, 2),
                "versions": {"torch": torch.__version__, "sb3": _sb3_version()},
            }
        )
    )


def _sb3_version() -> str:
    import stable_baselines3

    return stable_baselines3.__version__


if __name__ == "__main__":
    main()
