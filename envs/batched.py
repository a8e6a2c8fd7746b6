"""The training env as the loops step it: one TF environment over one or more seeded lanes."""

from __future__ import annotations

from collections.abc import Callable

from tf_agents.environments import batched_py_environment, tf_py_environment


def training_env(loader: Callable, seed: int, num_envs: int) -> tf_py_environment.TFPyEnvironment:
    """`num_envs` training envs from `loader`, lane i seeded `seed * num_envs + i`, stepped in
    turn (which keeps runs reproducible), as one batched TF environment."""
    if num_envs == 1:
        env = loader(seed=seed, training=True)
    else:
        env = batched_py_environment.BatchedPyEnvironment(
            [loader(seed=seed * num_envs + i, training=True) for i in range(num_envs)],
            multithreading=False,
        )
    if not env.batched:
        # TFPyEnvironment would wrap it with a thread pool that one env never uses, whose
        # finalizer fails at interpreter exit on Python 3.12 after an early refusal.
        env = batched_py_environment.BatchedPyEnvironment([env], False)
    return tf_py_environment.TFPyEnvironment(env)
