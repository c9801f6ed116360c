"""Model configs: YAML names them by ``name``; torch is imported only when one is built.

A model config builds a network from the window shape ``(n_channels, n_times)`` to the
task's output shape; :class:`~nbstream.tasks.module.Decoder` trains and tests it.
"""

from __future__ import annotations

import math
import typing as tp

import pydantic

if tp.TYPE_CHECKING:
    import torch

__all__ = ["MLP", "Linear", "ModelConfig"]


class ModelConfig(pydantic.BaseModel):
    """A network from windows ``(n_channels, n_times)`` to the task's output, and its optimizer."""

    model_config = pydantic.ConfigDict(extra="forbid")

    lr: float = pydantic.Field(default=3e-3, gt=0)
    weight_decay: float = pydantic.Field(default=0.0, ge=0)

    def build(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> torch.nn.Module:
        raise NotImplementedError


class Linear(ModelConfig):
    """A linear read-out of the whole window (the usual fMRI encoding/decoding baseline)."""

    name: tp.Literal["linear"] = "linear"

    def build(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> torch.nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(in_shape), math.prod(out_shape)),
            nn.Unflatten(1, out_shape),
        )


class MLP(ModelConfig):
    """One hidden layer."""

    name: tp.Literal["mlp"] = "mlp"
    hidden: int = pydantic.Field(default=128, ge=1)
    dropout: float = pydantic.Field(default=0.0, ge=0, lt=1)

    def build(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> torch.nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(in_shape), self.hidden),
            nn.GELU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, math.prod(out_shape)),
            nn.Unflatten(1, out_shape),
        )
