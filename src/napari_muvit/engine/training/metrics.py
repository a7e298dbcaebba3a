"""Evaluation metrics: Dice per class, mean Dice (mDSC), accuracy and ROC AUC (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` confusion matrix (rows = truth, columns = prediction) over batches.

    Pixels whose truth is ``ignore_index`` (default -1, i.e. unlabelled) are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = -1):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth, prediction) -> None:
        """Add integer arrays of equal shape (class indices ``0..K-1`` or ``ignore_index``)."""
        truth = np.asarray(truth).ravel()
        prediction = np.asarray(prediction).ravel()
        keep = truth != self.ignore_index
        t, p = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
        k = self.num_classes
        self.matrix += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def dice(self) -> np.ndarray:
        """Dice per class ``2TP / (2TP + FP + FN)``; NaN for a class absent from truth and prediction."""
        tp = np.diag(self.matrix).astype(float)
        fp = self.matrix.sum(0) - tp
        fn = self.matrix.sum(1) - tp
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)

    def mean_dice(self) -> float:
        """mDSC: the mean of the per-class Dice over classes present in truth or prediction."""
        d = self.dice()
        return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")

    def accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def dice_per_class(truth, prediction, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """Dice per class of two label arrays (class indices), skipping ``ignore_index`` in ``truth``."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(truth, prediction)
    return cm.dice()


def binary_auc(truth, score) -> float:
    """ROC AUC of scores for a binary truth (1 = positive), ties counted as one half (Mann-Whitney U).

    Returns NaN when only one of the two classes is present.
    """
    truth = np.asarray(truth).ravel().astype(bool)
    score = np.asarray(score, dtype=float).ravel()
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=float)
    # average ranks over ties (1-based)
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def multiclass_auc(truth, probabilities) -> float:
    """Mean one-vs-rest ROC AUC. ``truth (N,)`` class indices, ``probabilities (N, K)``.

    Classes absent from ``truth`` (or present in every sample) are left out of the mean.
    """
    truth = np.asarray(truth).ravel()
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape[1] == 2:
        return binary_auc(truth == 1, probabilities[:, 1])
    aucs = [binary_auc(truth == k, probabilities[:, k]) for k in range(probabilities.shape[1])]
    aucs = [a for a in aucs if np.isfinite(a)]
    return float(np.mean(aucs)) if aucs else float("nan")
