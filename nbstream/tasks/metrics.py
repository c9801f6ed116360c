"""A torchmetrics metric the stock set lacks: top-k retrieval against a fixed candidate set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

__all__ = ["TopKRetrieval"]


class TopKRetrieval(Metric):
    """Fraction of windows whose stimulus is among the ``top_k`` candidates closest (cosine)
    to the predicted embedding; ``candidates`` holds one embedding per stimulus."""

    higher_is_better = True
    full_state_update = False
    candidates: torch.Tensor
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, candidates: torch.Tensor, top_k: int = 1) -> None:
        super().__init__()
        self.top_k = min(top_k, len(candidates))
        self.register_buffer("candidates", F.normalize(candidates.float(), dim=-1))
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, y_pred: torch.Tensor, stimulus_ids: torch.Tensor) -> None:
        scores = F.normalize(y_pred.float(), dim=-1) @ self.candidates.T
        best = scores.topk(self.top_k, dim=-1).indices
        self.correct += (best == stimulus_ids[:, None]).any(dim=-1).sum()
        self.total += len(stimulus_ids)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)
