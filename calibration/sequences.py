"""Touch sequences: the next touchpoint in a stage given the last one (``--touch-order 1``), and how much
the data says it depends on it."""
from __future__ import annotations

from typing import Any

import numpy as np


def touch_sequences(share: np.ndarray, firsts: np.ndarray, followed: np.ndarray,
                    m: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(share of first interactions in a stage, next-touchpoint rows, their counts) for touch sequences.

    A stage's first interaction is a customer's first, or one after a move. A staying interaction
    followed by another (same customer, so same stage) gives one (this touchpoint -> next) pair,
    whenever it happened: what comes next does not depend on censoring. Both are shrunk toward the
    stage's shares of all interactions (``share``) with ``m`` pseudo-interactions. ``firsts`` [P, S, T]
    and ``followed`` [P, S, T, T] count them (calibration/stats.py).
    """
    S = share.shape[1]
    rows = firsts.sum(-1, keepdims=True)
    entry_share = np.where(rows + m > 0, (firsts + m * share) / np.maximum(rows + m, 1e-300), share)
    total = followed.sum(-1, keepdims=True)
    follow = (followed + m * share[:, :, None, :]) / np.maximum(total + m, 1e-300)
    follow = np.where(total + m > 0, follow, share[:, :, None, :])
    entry_share[:, S - 1] = 0.0
    follow[:, S - 1] = 0.0
    return entry_share, follow, {"first_in_stage": firsts, "followed": followed}


def touch_dependence(share: np.ndarray, followed: np.ndarray) -> dict[str, Any]:
    """How much the next touchpoint in a stage depends on the last: the log-likelihood gained per pair
    by first-order rows over independent draws (their own maximum-likelihood rows against the shares),
    and whether BIC favours the rows (one free parameter per (persona, stage, last, next) pair seen)."""
    pairs = int(followed.sum())
    if pairs == 0:
        return {"pairs": 0, "nats_per_interaction": 0.0, "bic_favours_sequences": False}
    rows = followed.sum(-1, keepdims=True)
    mle = followed / np.maximum(rows, 1)
    base = np.broadcast_to(share[:, :, None, :], followed.shape)
    seen = followed > 0
    gain = float((followed[seen] * (np.log(mle[seen]) - np.log(np.maximum(base[seen], 1e-300)))).sum())
    extra = int(((rows[..., 0] > 0)[..., None] & (base > 0)).sum() - (rows > 0).sum())
    return {"pairs": pairs, "nats_per_interaction": round(gain / pairs, 6),
            "bic_favours_sequences": bool(2 * gain > max(extra, 0) * np.log(pairs))}
