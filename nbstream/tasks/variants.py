"""The task variants: data configs naming the workload shape they produce.

Each variant draws a :class:`~nbstream.tasks.recordings.Recordings` world whose per-stimulus
targets have the shape users log, and says how to score it (torchmetrics):

========================  ==================================  ==============================
``task``                  ``y_pred`` / ``y_true`` per window  metrics
========================  ==================================  ==============================
``classification``        logits ``(n_classes,)`` / label     balanced accuracy
``voxels``                ``(n_voxels,)`` / noisy voxels      Pearson r (mean), MSE
``retrieval``             embedding ``(dim,)`` / the          top-1 and top-k among the
                          stimulus's embedding (the same      stimuli
                          for every window of a stimulus)
``ctc``                   log-probs ``(n_times, vocab)`` /    CTC loss, character error rate
                          integer labels ``(label_length,)``
========================  ==================================  ==============================

The configs are pure pydantic (YAML names them by ``task``); torch is imported only when
a world is built or scored.
"""

from __future__ import annotations

import math
import typing as tp

import pydantic

if tp.TYPE_CHECKING:
    import torch
    from torchmetrics import Metric

    from nbstream.tasks.recordings import Recordings

__all__ = ["CTC", "Classification", "Retrieval", "SyntheticTask", "VoxelRegression"]

_LETTERS = "_abcdefghijklmnopqrstuvwxyz'"  # index 0 is the CTC blank


class SyntheticTask(pydantic.BaseModel):
    """Windows of ``n_subjects`` x ``recordings_per_subject`` synthetic recordings.

    The last recording of each subject is the test set; every recording presents the
    ``n_stimuli`` stimuli in its own random order, with repeats.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    n_subjects: int = pydantic.Field(default=4, ge=1)
    recordings_per_subject: int = pydantic.Field(default=3, ge=2)
    windows_per_recording: int = pydantic.Field(default=128, ge=1)
    n_stimuli: int = pydantic.Field(default=32, ge=1)
    n_channels: int = pydantic.Field(default=16, ge=1)
    n_times: int = pydantic.Field(default=32, ge=1)
    latent_dim: int = pydantic.Field(default=8, ge=1)
    noise: float = pydantic.Field(default=2.0, ge=0)
    batch_size: int = pydantic.Field(default=32, ge=1)
    seed: int = 0

    # -- what a variant defines ----------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-window shape of the network's output (and of ``y_pred``)."""
        raise NotImplementedError

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-stimulus sources ``(n_stimuli, n_times, latent_dim)`` and targets."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, world: Recordings) -> dict[str, Metric]:
        raise NotImplementedError

    def update(
        self, metrics: dict[str, Metric], y_pred: torch.Tensor, y_true: torch.Tensor, batch: tp.Any
    ) -> None:
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """``y_pred`` from the network's output."""
        return output

    def target_noise(self) -> float:
        """Per-window noise added to the stimulus's target (0: the target itself)."""
        return 0.0

    # -- shared --------------------------------------------------------------------------
    def build(self) -> Recordings:
        """Draw the world (deterministic in ``seed``)."""
        import torch

        from nbstream.tasks.recordings import Recordings

        generator = torch.Generator().manual_seed(self.seed)
        shared = torch.randn(self.n_channels, self.latent_dim, generator=generator)
        own = torch.randn(self.n_subjects, self.n_channels, self.latent_dim, generator=generator)
        mixing = (shared + 0.3 * own) / math.sqrt(self.latent_dim)
        sources, targets = self._draw(generator)
        n_recordings = self.n_subjects * self.recordings_per_subject
        sequences = torch.stack(
            [
                torch.randperm(self.n_stimuli, generator=generator).repeat(
                    -(-self.windows_per_recording // self.n_stimuli)
                )[: self.windows_per_recording]
                for _ in range(n_recordings)
            ]
        ).view(self.n_subjects, self.recordings_per_subject, self.windows_per_recording)
        # each subject sees a stimulus's time course through its own channel mixing
        signals = torch.einsum("kcl,stl->ksct", mixing, sources).contiguous()
        return Recordings(
            seed=self.seed,
            signals=signals,
            targets=targets,
            sequences=sequences,
            noise=self.noise,
            target_noise=self.target_noise(),
            batch_size=self.batch_size,
        )

    def _latents(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A latent vector per stimulus, and its sources under an evoked-response profile."""
        import torch

        latent = torch.randn(self.n_stimuli, self.latent_dim, generator=generator)
        return latent, self._evoked(latent)

    def _evoked(self, latent: torch.Tensor) -> torch.Tensor:
        import torch

        profile = torch.sin(math.pi * torch.linspace(0, 1, self.n_times)) + 0.2
        return profile[None, :, None] * latent[:, None, :]


class Classification(SyntheticTask):
    """Decode the stimulus class (``stimulus % n_classes``): logits, integer labels."""

    task: tp.Literal["classification"] = "classification"
    n_classes: int = pydantic.Field(default=4, ge=2)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_classes,)

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        labels = torch.arange(self.n_stimuli) % self.n_classes
        centers = torch.randn(self.n_classes, self.latent_dim, generator=generator)
        jitter = 0.5 * torch.randn(self.n_stimuli, self.latent_dim, generator=generator)
        return self._evoked(centers[labels] + jitter), labels

    def loss(self, output: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output, y_true)

    def metrics(self, world: Recordings) -> dict[str, Metric]:
        from torchmetrics.classification import MulticlassAccuracy

        return {"balanced_accuracy": MulticlassAccuracy(self.n_classes, average="macro")}

    def update(
        self, metrics: dict[str, Metric], y_pred: torch.Tensor, y_true: torch.Tensor, batch: tp.Any
    ) -> None:
        metrics["balanced_accuracy"].update(y_pred, y_true)


class VoxelRegression(SyntheticTask):
    """Predict fMRI-like responses of ``n_voxels`` voxels (fsaverage5 has 20,484)."""

    task: tp.Literal["voxels"] = "voxels"
    n_voxels: int = pydantic.Field(default=2048, ge=1)
    voxel_noise: float = pydantic.Field(default=0.5, ge=0)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_voxels,)

    def target_noise(self) -> float:
        return self.voxel_noise

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        latent, sources = self._latents(generator)
        weights = torch.randn(self.latent_dim, self.n_voxels, generator=generator)
        return sources, latent @ weights / math.sqrt(self.latent_dim)

    def loss(self, output: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(output, y_true)

    def metrics(self, world: Recordings) -> dict[str, Metric]:
        from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef

        return {"pearson": PearsonCorrCoef(num_outputs=self.n_voxels), "mse": MeanSquaredError()}

    def update(
        self, metrics: dict[str, Metric], y_pred: torch.Tensor, y_true: torch.Tensor, batch: tp.Any
    ) -> None:
        metrics["pearson"].update(y_pred.float(), y_true.float())
        metrics["mse"].update(y_pred, y_true)


class Retrieval(SyntheticTask):
    """Predict each stimulus's embedding; retrieve the stimulus among all of them.

    ``y_true`` is the stimulus's (unit-norm) embedding, repeated for every window of the
    stimulus: the retrieval set is one row per stimulus group.
    """

    task: tp.Literal["retrieval"] = "retrieval"
    dim: int = pydantic.Field(default=64, ge=1)
    top_k: int = pydantic.Field(default=5, ge=1)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        latent, sources = self._latents(generator)
        weights = torch.randn(self.latent_dim, self.dim, generator=generator)
        return sources, F.normalize(latent @ weights, dim=-1)

    def loss(self, output: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return (1 - F.cosine_similarity(output, y_true, dim=-1)).mean()

    def metrics(self, world: Recordings) -> dict[str, Metric]:
        from nbstream.tasks.metrics import TopKRetrieval

        k = min(self.top_k, world.n_stimuli)
        return {  # the retrieval set: one embedding per stimulus
            "top1": TopKRetrieval(world.targets, top_k=1),
            f"top{k}": TopKRetrieval(world.targets, top_k=k),
        }

    def update(
        self, metrics: dict[str, Metric], y_pred: torch.Tensor, y_true: torch.Tensor, batch: tp.Any
    ) -> None:
        stimuli = batch.data["stimulus_id"].to(y_pred.device)
        for metric in metrics.values():
            metric.update(y_pred, stimuli)


class CTC(SyntheticTask):
    """Decode each stimulus's word: per-time-step log-probs, CTC against integer labels."""

    task: tp.Literal["ctc"] = "ctc"
    vocab: int = pydantic.Field(default=len(_LETTERS), ge=3, le=len(_LETTERS))
    label_length: int = pydantic.Field(default=4, ge=1)

    @pydantic.model_validator(mode="after")
    def _fits(self) -> CTC:
        if 2 * self.label_length > self.n_times:
            raise ValueError(
                f"label_length={self.label_length} needs n_times >= {2 * self.label_length} "
                f"(got {self.n_times}): CTC needs room for each symbol and a blank between"
            )
        return self

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_times, self.vocab)

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        labels = torch.randint(
            1, self.vocab, (self.n_stimuli, self.label_length), generator=generator
        )
        embedding = 2 * torch.randn(self.vocab, self.latent_dim, generator=generator)
        # each symbol of the word occupies an equal slice of the window, silence (blank) around
        slot = torch.arange(self.n_times) * self.label_length // self.n_times
        symbols = labels[:, slot]
        edge = (torch.arange(self.n_times) * self.label_length % self.n_times) < self.label_length
        symbols[:, edge] = 0
        return embedding[symbols], labels

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.log_softmax(dim=-1)

    def loss(self, output: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return self._ctc(self.predict(output), y_true)

    def _ctc(self, log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        n, n_times = log_probs.shape[:2]
        return F.ctc_loss(
            log_probs.transpose(0, 1).float(),
            labels,
            input_lengths=torch.full((n,), n_times, dtype=torch.long),
            target_lengths=torch.full((n,), labels.shape[1], dtype=torch.long),
            zero_infinity=True,
        )

    def metrics(self, world: Recordings) -> dict[str, Metric]:
        from torchmetrics import MeanMetric
        from torchmetrics.text import CharErrorRate

        return {"ctc_loss": MeanMetric(), "cer": CharErrorRate()}

    def update(
        self, metrics: dict[str, Metric], y_pred: torch.Tensor, y_true: torch.Tensor, batch: tp.Any
    ) -> None:
        metrics["ctc_loss"].update(self._ctc(y_pred, y_true), weight=len(y_true))
        metrics["cer"].update(
            [_greedy_decode(row) for row in y_pred.argmax(-1).tolist()],
            ["".join(_LETTERS[k] for k in row) for row in y_true.tolist()],
        )


def _greedy_decode(best: list[int]) -> str:
    """Best path: merge repeats, drop blanks."""
    out, previous = [], 0
    for k in best:
        if k != previous and k != 0:
            out.append(_LETTERS[k])
        previous = k
    return "".join(out)
