"""The embedded default task: synthetic recordings, task variants and small decoders.

``DataConfig`` and ``ModelConfig`` are pydantic discriminated unions: a YAML config names
the variant with ``data: {task: voxels | classification | retrieval | ctc, ...}`` and the
network with ``model: {name: linear | mlp, ...}``. Importing this package does not import
torch; building a world or a network does.
"""

from __future__ import annotations

import typing as tp

import pydantic

from nbstream.tasks.models import MLP, Linear
from nbstream.tasks.variants import CTC, Classification, Retrieval, SyntheticTask, VoxelRegression

__all__ = [
    "CTC",
    "MLP",
    "Classification",
    "DataConfig",
    "Linear",
    "ModelConfig",
    "Retrieval",
    "SyntheticTask",
    "VoxelRegression",
]

DataConfig = tp.Annotated[
    Classification | VoxelRegression | Retrieval | CTC, pydantic.Field(discriminator="task")
]
ModelConfig = tp.Annotated[Linear | MLP, pydantic.Field(discriminator="name")]
