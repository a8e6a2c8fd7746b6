"""Mixing our fix into a TF-Agents agent class without changing what users write."""

from __future__ import annotations


def mixed_in(mixin: type, agent_class: type, module: str) -> type:
    """`agent_class` with `mixin` first in its bases, under the class's own name and doc.

    Gin configures the `__init__` the subclass inherits, so `@DqnAgent` or `@PPOClipAgent`
    and their bindings select it unchanged, and checkpoints keep their layout.
    """
    return type(
        agent_class.__name__,
        (mixin, agent_class),
        {"__module__": module, "__doc__": agent_class.__doc__},
    )
