"""The reference point for cartpole_solve.py: Stable-Baselines3's tuned RL-Zoo DQN, same protocol.

Trains SB3 DQN with the RL Zoo's CartPole-v1 hyper-parameters (hyperparams/dqn.yml) for 50k
steps per seed, evaluates the deterministic policy on 20 episodes every 2,500 steps (as our
dqn_cartpole.gin does), and reports the steps and wall time until the mean first reaches 475.
Wall time counts from the start of this script, imports included, like cartpole_solve.py.

SB3 needs PyTorch, which this project does not install; use a separate virtual environment:

    python3.11 -m venv /tmp/sb3 && /tmp/sb3/bin/pip install torch==2.13.0 stable-baselines3 \
        "gymnasium==1.3.0" "numpy<2"
    /tmp/sb3/bin/python scripts/bench/sb3_cartpole_reference.py --seed=0
"""

import time

START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from stable_baselines3.common.callbacks import (  # noqa: E402
    EvalCallback,
    StopTrainingOnRewardThreshold,
)

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=50_000)
    parser.add_argument("--threshold", type=float, default=475.0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    eval_env = gym.make("CartPole-v1")
    stop = StopTrainingOnRewardThreshold(reward_threshold=args.threshold, verbose=0)
    evaluation = EvalCallback(
        eval_env,
        n_eval_episodes=20,
        eval_freq=2_500,
        deterministic=True,
        callback_on_new_best=stop,
        verbose=0,
    )
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=args.seed, verbose=0, **ZOO_CARTPOLE)
    model.learn(total_timesteps=args.budget, callback=evaluation)
    solved = evaluation.best_mean_reward >= args.threshold
    print(
        json.dumps(
            {
                "seed": args.seed,
                "solved": bool(solved),
                "steps_to_solve": int(model.num_timesteps) if solved else None,
                "wall_to_solve_s": round(time.time() - START, 1) if solved else None,
                "best_return": float(evaluation.best_mean_reward),
            }
        )
    )


if __name__ == "__main__":
    main()
