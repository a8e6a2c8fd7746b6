"""Every bound setting checked once, right after gin parses, before anything is built.

Two sources of rules, both in this module so there is one place to read them:
- the type hints of the configurables the pipeline owns (`int`, `float`, `bool`, `str`,
  `X | None`, factories such as `Callable`): a string where a number belongs, a float where
  an int belongs, or a plain value where the pipeline expects `@Configurable`, fails;
- `RULES`, the ranges and shapes of what users set most (counts >= 1, probabilities in
  [0, 1], layer tuples, ...), for our configurables and the TF-Agents / Keras ones we expose.
Combinations of settings (a batch larger than the replay, ...) are in `COMBINATIONS`.

Each problem becomes one `UserError` line: the setting, its value, what it must be.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gin

from pipeline.errors import UserError
from pipeline.value_checks import (
    PLAIN_TYPES,
    Check,
    called,
    factory,
    integer,
    is_reference,
    layer_sizes,
    number,
    one_of,
    positive,
    probability,
    schedule,
)

# --- the rules -----------------------------------------------------------------------------

_COUNT = integer(1)
_OPTIONAL_COUNT = integer(1, none=True)
_LOOP_COMMON: dict[str, Check] = {
    "seed": integer(0),
    "total_env_steps": _COUNT,
    "eval_interval": _COUNT,
    "eval_episodes": _COUNT,
    "progress_interval_s": positive(),
    "checkpoint_interval": _OPTIONAL_COUNT,
    "checkpoint_interval_s": positive(),
    "checkpoints_to_keep": _COUNT,
    "env_loader": factory(),
    "agent": factory(),
    "optimizer": factory(),
}
_OPTIMIZER: dict[str, Check] = {
    "learning_rate": positive(schedule=True),
    "epsilon": positive(),
    "beta_1": number(0.0, 1.0, high_open=True),
    "beta_2": number(0.0, 1.0, high_open=True),
    "clipnorm": positive(none=True),
    "global_clipnorm": positive(none=True),
}
_DQN_AGENT: dict[str, Check] = {
    "gamma": probability(),
    "n_step_update": _COUNT,
    "target_update_period": _COUNT,
    "target_update_tau": number(0.0, 1.0, low_open=True),
    "gradient_clipping": positive(none=True),
    "reward_scale_factor": number(),
}
_Q_NETWORK: dict[str, Check] = {
    "fc_layer_params": layer_sizes(),
    "conv_layer_params": layer_sizes(width=3),
}

_PRIORITIZED: dict[str, Check] = {
    "priority_exponent": number(0.0),
    "importance_exponent": probability(),
    "priority_epsilon": positive(),
}

RULES: dict[str, dict[str, Check]] = {
    "train": {
        **_LOOP_COMMON,
        "network": factory(),
        "replay": factory(),
        "augmentation": factory(none=True),
        "epsilon": schedule(),
        "initial_collect_steps": integer(0),
        "collect_steps_per_iteration": _COUNT,
        "train_steps_per_iteration": _COUNT,
        "batch_size": _COUNT,
        "replay_capacity": _COUNT,
        "final_eval_episodes": _OPTIONAL_COUNT,
        "eval_epsilon": probability(),
        "eval_processes": one_of(1, 2),
    },
    "train_on_policy": {
        **_LOOP_COMMON,
        "actor_network": factory(),
        "value_network": factory(none=True),
        "num_envs": _COUNT,
        "collect_episodes_per_iteration": _OPTIONAL_COUNT,
        "collect_steps_per_iteration": _OPTIONAL_COUNT,
        "max_steps_per_iteration": _COUNT,
    },
    "load_gymnasium": {
        "max_episode_steps": _OPTIONAL_COUNT,
        "discount": probability(),
    },
    "load_atari": {
        "num_envs": _COUNT,
        "sticky_action_prob": probability(),
        "noop_max": integer(0),
        "frame_skip": _COUNT,
        "frame_stack": _COUNT,
        "screen_size": _COUNT,
        "max_episode_frames": _COUNT,
        "num_threads": integer(0),
    },
    "LinearSchedule": {
        "start": probability(),
        "end": probability(),
        "decay_steps": _COUNT,
        "delay_steps": integer(0),
    },
    "ConstantSchedule": {"value": probability()},
    "PolynomialDecay": {
        "initial_learning_rate": positive(),
        "end_learning_rate": number(0.0),
        "decay_steps": _COUNT,
        "power": positive(),
    },
    "RandomShiftIntensity": {"pad": integer(0), "intensity_scale": number(0.0)},
    "Adam": _OPTIMIZER,
    "TorchAdam": _OPTIMIZER,
    "FusedAdam": _OPTIMIZER,
    "RMSprop": {**_OPTIMIZER, "rho": number(0.0, 1.0, high_open=True)},
    "DqnAgent": _DQN_AGENT,
    "DdqnAgent": _DQN_AGENT,
    "CategoricalDqnAgent": {**_DQN_AGENT, "min_q_value": number(), "max_q_value": number()},
    "RainbowAgent": {**_DQN_AGENT, "min_q_value": number(), "max_q_value": number()},
    "QNetwork": _Q_NETWORK,
    "TorchInitQNetwork": {"fc_layer_params": layer_sizes()},
    "DuelingQNetwork": {
        **_Q_NETWORK,
        "stream_fc_layer_params": layer_sizes(),
        "dtype": one_of("float32", "mixed_bfloat16", "mixed_float16"),
    },
    "CategoricalQNetwork": {**_Q_NETWORK, "num_atoms": integer(2)},
    "DuelingCategoricalQNetwork": {
        **_Q_NETWORK,
        "num_atoms": integer(2),
        "stream_fc_layer_params": layer_sizes(),
        "dtype": one_of("float32", "mixed_bfloat16", "mixed_float16"),
    },
    "FrameStackReplay": {"chunk_items": _COUNT},
    "PrioritizedUniformReplay": _PRIORITIZED,
    "PrioritizedFrameStackReplay": _PRIORITIZED,
    "ActorDistributionNetwork": {"fc_layer_params": layer_sizes()},
    "ValueNetwork": {"fc_layer_params": layer_sizes()},
    "PPOClipAgent": {
        "importance_ratio_clipping": positive(),
        "lambda_value": probability(),
        "discount_factor": probability(),
        "num_epochs": _COUNT,
        "entropy_regularization": number(0.0),
        "value_pred_loss_coef": number(0.0),
    },
    "ReinforceAgent": {"gamma": probability()},
    "A2CAgent": {
        "gamma": probability(),
        "value_loss_coef": number(0.0),
        "entropy_coef": number(0.0),
        "gradient_clipping": positive(none=True),
    },
    "distributed": {
        "priority_exponent": number(0.0),
        "importance_exponent": probability(),
        "samples_per_insert": positive(none=True),
        "tolerance": positive(),
        "min_error_batches": _COUNT,
        "weight_pull_interval": _COUNT,
        "weight_push_interval": _COUNT,
        "server_checkpoint_interval_s": positive(),
        "connect_timeout_s": positive(),
    },
}


def _combinations(value: Callable[[str], Any]) -> list[str]:
    """Problems between settings; `value(name)` is the bound value or the default."""
    problems = []
    if value("run_experiment.loop") is None:  # the DQN loop
        batch, capacity = value("train.batch_size"), value("train.replay_capacity")
        if _all_int(batch, capacity) and batch > capacity:
            problems.append(
                f"train.batch_size={batch} is larger than train.replay_capacity={capacity}: "
                "lower the batch or raise the capacity"
            )
        start, total = value("train.initial_collect_steps"), value("train.total_env_steps")
        if _all_int(start, total) and start >= total:
            problems.append(
                f"train.initial_collect_steps ({start}) leaves no training within "
                f"train.total_env_steps ({total}): lower the first or raise the second"
            )
    for agent in ("CategoricalDqnAgent", "RainbowAgent"):
        low, high = value(f"{agent}.min_q_value"), value(f"{agent}.max_q_value")
        if _all_number(low, high) and low >= high:
            problems.append(
                f"{agent}.min_q_value={low} must be below {agent}.max_q_value={high}: "
                "swap or widen them"
            )
    return problems


def _all_int(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _all_number(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


# --- applying them -------------------------------------------------------------------------


def check_bound_settings() -> None:
    """Raises `UserError` for the first bound setting (or combination) that is wrong."""
    for (scope, selector), parameters in _bound().items():
        short = selector.split(".")[-1]
        rules = {**_annotation_rules(selector), **RULES.get(short, {})}
        for parameter, value in parameters.items():
            check = rules.get(parameter)
            if check is None or _is_macro(value):
                continue
            problem = check(value)
            if problem is not None:
                name = f"{scope + '/' if scope else ''}{short}.{parameter}"
                raise UserError(f"{name}={_show(value)} {problem}: fix the setting")
    problems = _combinations(effective_value)
    if problems:
        raise UserError(problems[0])


def _bound() -> dict[tuple[str, str], dict[str, Any]]:
    try:
        return dict(gin.config._CONFIG)
    except AttributeError:  # gin internals moved: only the constructors' own checks remain
        return {}


def _is_macro(value: Any) -> bool:
    return is_reference(value) and value.selector in ("macro", "gin.macro", "constant")


def _show(value: Any) -> str:
    return called(value) if is_reference(value) else repr(value)


def effective_value(name: str) -> Any:
    """The bound value of `Configurable.param`, else its default, else None."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        pass
    configurable, parameter = name.rsplit(".", 1)
    target = _signature_target(configurable)
    if target is None:
        return None
    declared = inspect.signature(target).parameters.get(parameter)
    if declared is None or declared.default is inspect.Parameter.empty:
        return None
    return declared.default


def _signature_target(selector: str) -> Callable | None:
    try:
        wrapped = gin.config._REGISTRY.get_match(selector).wrapped
    except (AttributeError, KeyError, ValueError, TypeError):
        return None
    return wrapped.__init__ if inspect.isclass(wrapped) else wrapped


def _annotation_rules(selector: str) -> dict[str, Check]:
    """Type checks from the hints of a configurable the pipeline owns."""
    target = _signature_target(selector)
    module = getattr(target, "__module__", "") or ""
    if target is None or not module.startswith(("pipeline", "envs")):
        return {}
    rules = {}
    for name, parameter in inspect.signature(target).parameters.items():
        check = _check_for_annotation(parameter.annotation)
        if check is not None:
            rules[name] = check
    return rules


def _check_for_annotation(annotation: Any) -> Check | None:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = {part.strip() for part in str(text).split("|")}
    none = "None" in parts
    kinds = parts - {"None"}
    if kinds and all(k.startswith(("Callable", "type[")) for k in kinds):
        return factory(none=none)
    if not parts <= PLAIN_TYPES or len(kinds) != 1:
        return None
    (kind,) = kinds
    if kind == "int":
        return integer(none=none)
    if kind == "float":
        return number(none=none)
    return _exact_type(bool if kind == "bool" else str, none)


def _exact_type(kind: type, none: bool) -> Check:
    def check(value: Any) -> str | None:
        if (value is None and none) or type(value) is kind:
            return None
        return f"must be a {kind.__name__}" + (" or None" if none else "")

    return check
