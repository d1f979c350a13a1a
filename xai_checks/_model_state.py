"""Temporary model state for explanation passes, always restored."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["explanation_mode"]


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode with frozen parameters; restore both on exit.

    Eval mode gives the behaviour that ships (no dropout, running BN stats).
    Freezing the parameters keeps autograd from tracking weight gradients we
    never use and leaves every ``.grad`` untouched. Each submodule's own
    ``training`` flag is restored, not just the root's, so a frozen BN inside a
    training model stays as the caller left it.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        # Flags set directly, not via model.eval(): torch.export modules (MLflow's
        # pt2 format) refuse eval() because their mode is fixed at export time.
        for module, _ in modes:
            module.training = False
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
