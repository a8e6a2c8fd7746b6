"""Every name a gin file may use, registered in one place.

Gin knows a configurable only once the module that declares it has been imported.
`config.parse` imports this module before it reads a gin file, so the names are there
whichever command parses (train, evaluate, a sweep's check, a benchmark, a test), and no
other module imports a module just for its gin names. `distributed.*` belongs to the
distributed roles, which register it themselves (its module needs Reverb, which would slow
every other command's start).
"""

from __future__ import annotations

from tf_agents.agents.categorical_dqn import categorical_dqn_agent
from tf_agents.agents.dqn import dqn_agent
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.agents.reinforce import reinforce_agent
from tf_agents.networks import (
    actor_distribution_network,
    categorical_q_network,
    q_network,
    value_network,
)

import envs
from pipeline.agents import a2c, augmentation, build, networks, optimizers, rainbow, schedules
from pipeline.baselines import scripted_policies
from pipeline.loops import off_policy, on_policy
from pipeline.replay import frame_stack, prioritized, uniform

MODULES = (
    # TF-Agents: DqnAgent, DdqnAgent, CategoricalDqnAgent, PPOClipAgent, ReinforceAgent,
    # QNetwork, CategoricalQNetwork, ActorDistributionNetwork, ValueNetwork.
    dqn_agent, categorical_dqn_agent, ppo_clip_agent, reinforce_agent, q_network,
    categorical_q_network, actor_distribution_network, value_network,
    envs,  # load_gymnasium, load_atari
    # ours: agents and their parts, schedules, baselines, the loops, the replay buffers
    a2c, augmentation, build, networks, optimizers, rainbow, schedules, scripted_policies,
    off_policy, on_policy, frame_stack, prioritized, uniform,
)  # fmt: skip
