"""Builds agents from gin references and makes TF-Agents' pieces bindable in gin files.

Gin binds classes by reference (`train.agent = @DqnAgent`), so there is no string factory:
any agent class with the DQN constructor signature plugs in.
"""

from __future__ import annotations

from collections.abc import Callable

import gin
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.networks import network
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

# TF-Agents already registers DqnAgent, DdqnAgent and QNetwork; these are the pieces it
# leaves out.
gin.external_configurable(common.element_wise_huber_loss, module="tf_agents")
gin.external_configurable(common.element_wise_squared_loss, module="tf_agents")
gin.external_configurable(tf.keras.optimizers.Adam, module="tf.keras.optimizers")
gin.external_configurable(tf.keras.optimizers.RMSprop, module="tf.keras.optimizers")
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
) -> tf_agent.TFAgent:
    """Builds a value-based agent whose optimizer state exists before the first update.

    Creating the optimizer's slots up front lets the train loop run as one `tf.function`
    (variables cannot be created inside a graph loop).
    """
    q_net = network_class(tensor_spec.from_spec(time_step_spec.observation), action_spec)
    optimizer = optimizer_class()
    agent = agent_class(
        time_step_spec,
        action_spec,
        q_network=q_net,
        optimizer=optimizer,
        epsilon_greedy=epsilon,
        train_step_counter=train_step_counter,
    )
    agent.initialize()
    if hasattr(optimizer, "build"):
        optimizer.build(q_net.trainable_variables)
    return agent
