"""Registers the Array-API generic implementations: usable for every input."""

from .. import _generic
from . import DATA_OPS, OPS, register


def _always(ctx):  # noqa: ARG001 - the generic path takes any Array-API input
    return True


for _op in OPS + DATA_OPS:
    register(_op, "generic", getattr(_generic, _op), is_usable_for=_always, priority=0)
