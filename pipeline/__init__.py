"""TF-Agents experiment pipeline: gin-configured collect-train-eval runs."""

from pipeline import quiet, stack

stack.prepare()
quiet.apply()
