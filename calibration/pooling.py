"""Sparse cells pooled: Dirichlet (beta) posterior means shrunk toward the all-persona estimate of the same
stage and touchpoint, which is shrunk toward the stage's average, with ``m`` pseudo-interactions."""
from __future__ import annotations

import numpy as np

DEFAULT_GAP_DAYS = 7.0


def pool_outcomes(outcome: np.ndarray, stay: np.ndarray, m: float) -> np.ndarray:
    """Dirichlet shrinkage of [drop, advance...] (with stay as the remainder)."""
    P, S, T, K = outcome.shape
    full = np.concatenate([stay[..., None], outcome], axis=-1)  # [P,S,T,1+K]: stay, drop, adv...
    valid = np.zeros((S, 1 + K), dtype=bool)
    valid[:, :2] = True
    for s in range(S):
        valid[s, 2 + s + 1:] = True
    stage_tot = full.sum(axis=(0, 2))  # [S, 1+K]
    stage_n = stage_tot.sum(axis=-1, keepdims=True)
    uniform = valid / valid.sum(axis=-1, keepdims=True)
    stage_p = np.where(stage_n > 0, stage_tot / np.maximum(stage_n, 1), uniform)
    tp_tot = full.sum(axis=0)  # [S, T, 1+K]
    tp_n = tp_tot.sum(axis=-1, keepdims=True)
    tp_p = (tp_tot + m * stage_p[:, None, :]) / (tp_n + m) if m > 0 else np.where(
        tp_n > 0, tp_tot / np.maximum(tp_n, 1), stage_p[:, None, :])
    cell_n = full.sum(axis=-1, keepdims=True)
    if m > 0:
        cell_p = (full + m * tp_p[None]) / (cell_n + m)
    else:
        cell_p = np.where(cell_n > 0, full / np.maximum(cell_n, 1), tp_p[None])
    cell_p = cell_p * valid[None, :, None, :]
    cell_p /= np.maximum(cell_p.sum(axis=-1, keepdims=True), 1e-300)
    cell_p[:, S - 1] = 0.0
    return cell_p[..., 1:]


def pool_shares(counts: np.ndarray, m: float) -> np.ndarray:
    """Touchpoint shares per persona x stage, pooled."""
    P, S, T = counts.shape
    top = counts.sum(axis=0)  # [S, T]
    top_n = top.sum(axis=-1, keepdims=True)
    top_p = np.where(top_n > 0, top / np.maximum(top_n, 1), 1.0 / T)
    n = counts.sum(axis=-1, keepdims=True)
    share = (counts + m * top_p[None]) / (n + m) if m > 0 else np.where(n > 0, counts / np.maximum(n, 1), top_p[None])
    share[:, S - 1] = 0.0
    return share


def pool_binomial(k: np.ndarray, n: np.ndarray, m: float) -> np.ndarray:
    """K of n per persona x stage, pooled toward all personas."""
    top_n = n.sum(axis=0)
    top = np.where(top_n > 0, k.sum(axis=0) / np.maximum(top_n, 1), 0.0)
    if m > 0:
        return (k + m * top[None]) / (n + m)
    return np.where(n > 0, k / np.maximum(n, 1), top[None])


def pool_rates(gaps: np.ndarray, days: np.ndarray, m: float) -> np.ndarray:
    """Interaction rates (gaps per day at risk) per persona x stage, pooled toward the stage's rate."""
    P, S = gaps.shape
    g_all, d_all = gaps.sum(), days.sum()
    overall = g_all / d_all if g_all > 0 and d_all > 0 else 1.0 / DEFAULT_GAP_DAYS
    g_s, d_s = gaps.sum(axis=0), days.sum(axis=0)
    stage = np.where((g_s > 0) & (d_s > 0), g_s / np.maximum(d_s, 1e-300), overall)
    if m > 0:
        rate = (gaps + m) / (days + m / stage[None])
    else:
        rate = np.where((gaps > 0) & (days > 0), gaps / np.maximum(days, 1e-300), stage[None])
    rate[:, S - 1] = 0.0
    return rate
