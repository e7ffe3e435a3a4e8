"""Held-out accuracy of the learned encoders, each next to a trivial baseline.

Motion (E_mot):
* β regression: mean absolute error per :class:`Expression` field of the linear read-out,
  against always predicting the training mean;
* identity/view blindness: for every held-out image, its nearest neighbour among the
  images of *other* heads (Euclidean, in v) should show the same β; top-1 accuracy and
  the neighbour's β error, against the same retrieval on raw pixels and against chance;
  and the spread of v among images sharing one β over its spread across all images
  (:func:`expression_spread_ratio`, 0 = blind to head and view).

Identity: verification of every held-out image pair (same head or not) by cosine
similarity — ROC-AUC over all pairs and over the pairs left when same-head pairs must
differ in expression, or in view, and the best balanced accuracy over thresholds (the threshold is
picked on the held-out pairs themselves, for encoder and baseline alike) — against
raw-pixel cosine similarity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from portrait4d.models.learned_encoders import IdentityEncoder, MotionEncoder
from portrait4d.synthetic.params import Expression
from portrait4d.train.encoder_data import EncoderDataset

_BATCH = 256


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values`` [N]; tied values share their mean rank (Mann–Whitney)."""
    sorted_values, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)
    mean_rank = last - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(values.shape, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


@torch.no_grad()
def embed(
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], data: EncoderDataset, device: torch.device | str
) -> torch.Tensor:
    """``function(images, landmarks)`` over every image of ``data`` in batches; result ``[N, ...]`` on the CPU."""
    return torch.cat(
        [
            function(data.float_images(batch, device), data.landmarks[batch].to(device)).float().cpu()
            for batch in (slice(i, i + _BATCH) for i in range(0, len(data), _BATCH))
        ]
    )


def pixels(data: EncoderDataset) -> torch.Tensor:
    """Raw images as flat vectors ``[N, 3·S·S]`` in [-1, 1]: the trivial baseline's embedding."""
    return data.float_images().flatten(1)


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties ½."""
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        raise ValueError("ROC-AUC needs both positive and negative pairs")
    ranks = _average_ranks(scores.double())
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def cross_head_retrieval(embeddings: torch.Tensor, data: EncoderDataset) -> dict[str, float]:
    """Nearest neighbour among other heads' images: top-1 same-β rate and the neighbour's β MAE."""
    distance = torch.cdist(embeddings.double(), embeddings.double())  # [N, N]
    same_head = data.head[:, None] == data.head[None, :]
    neighbour = distance.masked_fill(same_head, float("inf")).argmin(dim=1)
    return {
        "top1_same_expression": float((data.expression_id[neighbour] == data.expression_id).float().mean()),
        "neighbour_expression_mae": float((data.expression[neighbour] - data.expression).abs().mean()),
    }


def expression_spread_ratio(embeddings: torch.Tensor, data: EncoderDataset) -> float:
    """Spread of the embeddings ``[N, D]`` among images sharing one β (other heads and views)
    over their spread across all images: 0 when v depends on β alone, about 1 when it
    ignores β. Spread = summed per-dimension variance."""
    members = data.members(data.expression_id)  # [E, M]
    grouped = embeddings.double()[members]  # [E, M, D]
    within = grouped.var(dim=1, unbiased=False).sum(dim=-1).mean()
    return float(within / embeddings.double().var(dim=0, unbiased=False).sum().clamp_min(1e-12))


def _retrieval_chance(data: EncoderDataset) -> float:
    same_head = data.head[:, None] == data.head[None, :]
    match = (data.expression_id[:, None] == data.expression_id[None, :]) & ~same_head
    return float((match.sum(dim=1) / (~same_head).sum(dim=1)).mean())


def motion_report(encoder: MotionEncoder, train: EncoderDataset, heldout: EncoderDataset, device: torch.device | str) -> dict:
    """β error per field, cross-head retrieval and the same-β spread of v on ``heldout``,
    each with its baseline."""
    predicted = embed(encoder.expression, heldout, device)  # [N, 9]
    embeddings = embed(encoder, heldout, device)  # [N, D]
    raw = pixels(heldout)
    mean_baseline = train.expression.mean(dim=0).expand_as(heldout.expression)
    errors = (predicted - heldout.expression).abs().mean(dim=0)
    baseline = (mean_baseline - heldout.expression).abs().mean(dim=0)
    names = Expression.names()
    return {
        "expression_mae": {
            "encoder": dict(zip(names, errors.tolist())),
            "train_mean_baseline": dict(zip(names, baseline.tolist())),
            "encoder_mean": float(errors.mean()),
            "train_mean_baseline_mean": float(baseline.mean()),
        },
        "cross_head_retrieval": {
            "encoder": cross_head_retrieval(embeddings, heldout),
            "raw_pixel_baseline": cross_head_retrieval(raw, heldout),
            "chance_top1": _retrieval_chance(heldout),
        },
        "same_expression_spread_ratio": {
            "encoder": expression_spread_ratio(embeddings, heldout),
            "raw_pixel_baseline": expression_spread_ratio(raw, heldout),
        },
    }


def _pair_scores(embeddings: torch.Tensor, data: EncoderDataset) -> tuple[torch.Tensor, ...]:
    """Cosine similarity and same-head, same-expression, same-camera flags of every pair i < j."""
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    i, j = torch.triu_indices(len(data), len(data), offset=1)
    scores = (unit @ unit.T)[i, j]
    same_camera = (data.cameras[i] == data.cameras[j]).all(dim=1)
    return scores, data.head[i] == data.head[j], data.expression_id[i] == data.expression_id[j], same_camera


def best_balanced_accuracy(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The highest mean of true-positive and true-negative rates over all thresholds (score ≥ t: "same")."""
    order = torch.argsort(scores, descending=True)
    true_positive = positive[order].double().cumsum(0) / positive.sum()
    true_negative = 1.0 - (~positive[order]).double().cumsum(0) / (~positive).sum()
    return float((0.5 * (true_positive + true_negative)).max())


def _verification(embeddings: torch.Tensor, data: EncoderDataset) -> dict[str, float]:
    scores, same_head, same_expression, same_camera = _pair_scores(embeddings, data)
    across_expressions = ~same_head | ~same_expression
    across_views = ~same_head | ~same_camera
    return {
        "roc_auc": roc_auc(scores, same_head),
        "roc_auc_across_expressions": roc_auc(scores[across_expressions], same_head[across_expressions]),
        "roc_auc_across_views": roc_auc(scores[across_views], same_head[across_views]),
        "best_balanced_accuracy": best_balanced_accuracy(scores, same_head),
    }


def identity_report(encoder: IdentityEncoder, heldout: EncoderDataset, device: torch.device | str) -> dict:
    """Same-head verification on ``heldout`` for the encoder and for raw-pixel cosine similarity."""
    return {
        "encoder": _verification(embed(lambda images, _: encoder(images), heldout, device), heldout),
        "raw_pixel_baseline": _verification(pixels(heldout), heldout),
    }
