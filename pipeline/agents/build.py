"""Builds agents from gin references and makes TF-Agents' pieces bindable in gin files.

Gin binds classes by reference (`train.agent = @DqnAgent`), so there is no string factory:
any agent class with the DQN constructor signature plugs in (DqnAgent, DdqnAgent,
CategoricalDqnAgent with `@CategoricalQNetwork`; dueling is a network, `@DuelingQNetwork`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.agents.data_converter import AsNStepTransition
from tf_agents.agents.dqn import dqn_agent
from tf_agents.networks import network
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

from envs import toy_mdp
from pipeline.agents.ppo import with_bootstrapped_returns
from pipeline.agents.synced_target import with_synced_target
from pipeline.errors import UserError

# TF-Agents already registers DqnAgent, DdqnAgent and QNetwork; these are the pieces it
# leaves out.
gin.external_configurable(common.element_wise_huber_loss, module="tf_agents")
gin.external_configurable(common.element_wise_squared_loss, module="tf_agents")
gin.external_configurable(tf.keras.optimizers.Adam, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.RMSprop, module="tf.keras.optimizers")
# A learning rate that decays over the updates (`Adam.learning_rate = @PolynomialDecay()`);
# its step is the optimizer's update count, which checkpoints hold.
gin.external_configurable(
    tf.keras.optimizers.schedules.PolynomialDecay, module="tf.keras.optimizers.schedules"
)
gin.external_configurable(toy_mdp.observation_and_mask, module="envs.toy_mdp")
# The TF1 initializer draws new values on every call; a Keras 2.15 initializer instance shared
# by several layers (as a gin-bound one is) gives every same-shaped layer identical weights.
gin.external_configurable(
    tf.compat.v1.variance_scaling_initializer,
    name="variance_scaling_initializer",
    module="tf.compat.v1",
)


def build_dqn_family(
    agent_class: Callable[..., tf_agent.TFAgent],
    network_class: Callable[..., network.Network],
    optimizer_class: Callable[[], tf.keras.optimizers.Optimizer],
    time_step_spec,
    action_spec,
    epsilon: Callable[[], tf.Tensor],
    train_step_counter: tf.Variable,
    action_mask_splitter: Callable | None = None,
) -> tf_agent.TFAgent:
    """Builds a value-based agent whose optimizer state exists before the first update.

    Creating the optimizer's slots up front lets the train loop run as one `tf.function`
    (variables cannot be created inside a graph loop). DQN and double DQN with a target
    synced after every update read the next states through the online network alone
    (`pipeline.agents.synced_target`).
    """
    observation_spec = tensor_spec.from_spec(time_step_spec.observation)
    if action_mask_splitter is not None:  # the network sees the state part only
        observation_spec = action_mask_splitter(observation_spec)[0]
    q_net = network_class(observation_spec, action_spec)
    output_spec = q_net.create_variables()
    if tf.nest.flatten(output_spec)[0].dtype != tf.float32:
        raise UserError(
            f"{type(q_net).__name__} outputs {tf.nest.flatten(output_spec)[0].dtype.name} "
            "Q-values; the DQN losses need float32: for mixed precision use "
            "@DuelingQNetwork with DuelingQNetwork.dtype='mixed_bfloat16' (its heads stay "
            "float32)"
        )
    # C51 (CategoricalDqnAgent) names its network argument differently; the rest is shared.
    network_arg = _first_parameter(agent_class, "categorical_q_network", "q_network")
    options = {
        network_arg: q_net,
        "epsilon_greedy": epsilon,
        "observation_and_action_constraint_splitter": action_mask_splitter,
    }
    slots = q_net.trainable_variables  # not the target network's
    specs = (time_step_spec, action_spec)
    return _initialized_agent(
        with_synced_target(agent_class), specs, optimizer_class, train_step_counter, slots,
        options,
    )  # fmt: skip


def _initialized_agent(
    agent_class: Callable[..., tf_agent.TFAgent],
    specs: tuple,
    optimizer_class: Callable[[], tf.keras.optimizers.Optimizer],
    train_step_counter: tf.Variable,
    slot_variables: Sequence[tf.Variable] | None,
    networks_and_options: dict[str, Any],
) -> tf_agent.TFAgent:
    """The agent built from `specs` (time step, action) and initialised, with its optimizer's
    slots created for `slot_variables` (None: all the agent's trainable variables)."""
    optimizer = optimizer_class()
    agent = agent_class(
        *specs,
        optimizer=optimizer,
        train_step_counter=train_step_counter,
        **networks_and_options,
    )
    agent.initialize()
    if hasattr(optimizer, "build"):
        optimizer.build(agent.trainable_variables if slot_variables is None else slot_variables)
    return agent


def _first_parameter(agent_class: Callable, *names: str) -> str:
    parameters = inspect.signature(agent_class).parameters
    return next(name for name in names if name in parameters)


def build_on_policy(
    agent_class: Callable[..., tf_agent.TFAgent],
    actor_network_class: Callable[..., network.Network],
    value_network_class: Callable[..., network.Network] | None,
    optimizer_class: Callable[[], tf.keras.optimizers.Optimizer],
    time_step_spec,
    action_spec,
    train_step_counter: tf.Variable,
) -> tf_agent.TFAgent:
    """Builds a policy-gradient agent (REINFORCE, A2C, PPO) from gin references.

    TF-Agents' agents disagree on argument names (`actor_network` vs `actor_net`), so they
    are looked up in the class's signature. The optimizer's slots are created up front so a
    checkpoint can be restored before the first update. TF-Agents' PPO agents get returns and
    advantages that bootstrap truncations and batch ends (`pipeline.agents.ppo`).
    """
    agent_class = with_bootstrapped_returns(agent_class)
    observation_spec = tensor_spec.from_spec(time_step_spec.observation)
    actor = actor_network_class(observation_spec, action_spec)
    kwargs = {_first_parameter(agent_class, "actor_network", "actor_net"): actor}
    if value_network_class is not None:
        value = value_network_class(observation_spec)
        kwargs[_first_parameter(agent_class, "value_network", "value_net")] = value
    specs = (time_step_spec, action_spec)
    return _initialized_agent(agent_class, specs, optimizer_class, train_step_counter, None, kwargs)


def trains_on_transitions(agent: tf_agent.TFAgent) -> bool:
    """Whether the agent turns windows into n-step transitions with TF-Agents' converter.

    DqnAgent's loss (DdqnAgent's too) starts with `AsNStepTransition`; then the buffer
    builds the same transition itself and skips the observations the converter would
    drop. C51 overrides the loss and reads the window directly, so it gets windows;
    `RainbowAgent` converts them itself and says so (`trains_on_transitions`).
    """
    uses_converter = getattr(
        agent, "trains_on_transitions", type(agent)._loss is dqn_agent.DqnAgent._loss
    )
    return uses_converter and isinstance(agent._as_transition, AsNStepTransition)
