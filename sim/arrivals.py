"""Arrivals by calendar day: the log's own pattern fitted, or a number the user gives (pure).

The log's pattern is a Poisson regression of the daily arrival counts the model keeps
(``arrivals.daily``: UTC calendar days, written by calibration): log E[arrivals on day d] =
level + trend x years + weekday effect + yearly Fourier terms. Each component is fitted only as far
as the log's length supports it (weekly: 3 weeks of days; trend: 8 weeks; yearly: 2 years, two
harmonics), and kept only where it lowers the quasi-BIC beside the others (backward from all the
allowed ones; the Poisson log-likelihood over the dispersion of the fullest allowed model, plus
log(days) per coefficient: a trend extrapolated into
the forecast must be clearly there; a trend must also have forecast the log's last quarter better
than no trend, each fitted on the days before it); ``reasons`` says for each
component why it was or was not fitted. A model file without daily counts (written before they
were kept) falls back to its weekly counts (``per_week``): level and trend only.

Forecast uncertainty: the coefficients are drawn from their normal approximation (the inverse
Fisher information times the dispersion) and each day's count from a gamma-Poisson mixture with
variance dispersion x mean (Poisson when the dispersion is at most 1). A number the user gives
(``--arrivals-per-week`` or a scenario's ``arrivals_per_week``) is a known mean: Poisson counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import InputError

YEAR = 365.25
NEEDS = {"weekly": 21, "trend": 56, "yearly": 730}  # days of history each component needs
WHY_NEEDED = {"weekly": "each weekday seen at least 3 times", "trend": "8 weeks to tell a trend from noise",
              "yearly": "two full years to tell a season from the level and the trend"}
HARMONICS = 2


@dataclass
class ArrivalModel:
    """Daily arrivals: a fitted pattern (``coef`` over ``components``) or a constant mean."""

    source: str  # "log daily counts", "log weekly counts", "--arrivals-per-week", "scenario arrivals_per_week"
    components: list[str]
    reasons: dict[str, str]
    coef: np.ndarray
    cov: np.ndarray
    dispersion: float
    centre_day: float  # epoch day at which the trend is 0
    history_first_day: int | None = None  # epoch day of the first observed day
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))  # observed arrivals per day

    @property
    def history_end_day(self) -> int | None:
        """The epoch day after the last observed day (None without history)."""
        return None if self.history_first_day is None else self.history_first_day + self.history.size

    def design(self, days: np.ndarray) -> np.ndarray:
        """The regression's columns at epoch days ``days`` (the day's middle)."""
        days = np.asarray(days, dtype=float)
        cols = [np.ones_like(days)]
        if "trend" in self.components:
            cols.append((days + 0.5 - self.centre_day) / YEAR)
        if "weekly" in self.components:
            wd = np.floor(days).astype(np.int64) % 7
            cols.extend((wd == k).astype(float) for k in range(1, 7))
        if "yearly" in self.components:
            ang = 2 * np.pi * (days + 0.5) / YEAR
            for h in range(1, HARMONICS + 1):
                cols.extend([np.sin(h * ang), np.cos(h * ang)])
        return np.stack(cols, axis=-1)

    def mean(self, days: np.ndarray) -> np.ndarray:
        """Expected arrivals on each epoch day."""
        return np.exp(np.clip(self.design(days) @ self.coef, -50.0, 50.0))

    def paths(self, days: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of the arrivals on each day [n, days]: coefficients, then counts."""
        X = self.design(days)
        if self.cov.size and np.any(self.cov):
            coefs = rng.multivariate_normal(self.coef, self.cov, size=n, method="cholesky")
        else:
            coefs = np.broadcast_to(self.coef, (n, self.coef.size))
        # a day's drawn mean at most 10x its fitted one: a weekday the history never saw has a
        # coefficient near -inf with a vast variance, whose draws would otherwise overflow
        fitted = np.clip(X @ self.coef, -50.0, 50.0)
        mu = np.exp(np.clip(coefs @ X.T, -50.0, fitted + np.log(10.0)))
        if self.dispersion > 1.0:  # gamma-Poisson: variance dispersion x mean
            k = self.dispersion - 1.0
            mu = rng.gamma(mu / k, k)
        return rng.poisson(mu).astype(float)

    def to_dict(self) -> dict[str, Any]:
        """The arrivals record of forecast.json."""
        names = _coef_names(self.components)
        out: dict[str, Any] = {"source": self.source, "components": list(self.components), "reasons": self.reasons,
                               "coefficients": {k: round(float(v), 6) for k, v in zip(names, self.coef)},
                               "dispersion": round(float(self.dispersion), 6)}
        if self.history_first_day is not None:
            out["history"] = {"first_day": _date(self.history_first_day),
                              "last_day": _date(self.history_first_day + self.history.size - 1),
                              "days": int(self.history.size), "arrivals": int(self.history.sum())}
        return out


def constant(per_week: float, source: str) -> ArrivalModel:
    """A known mean of ``per_week`` arrivals a week (per_week / 7 a day), Poisson counts."""
    return ArrivalModel(source=source, components=["level"], reasons={"level": "given"},
                        coef=np.array([np.log(per_week / 7.0)]), cov=np.zeros((1, 1)), dispersion=1.0,
                        centre_day=0.0)


def with_history(fitted: ArrivalModel, other: ArrivalModel) -> ArrivalModel:
    """``other``'s pattern with ``fitted``'s observed history (the log's days stay as they were)."""
    return ArrivalModel(source=other.source, components=other.components, reasons=other.reasons, coef=other.coef,
                        cov=other.cov, dispersion=other.dispersion, centre_day=other.centre_day,
                        history_first_day=fitted.history_first_day, history=fitted.history)


def from_model_arrivals(arrivals: dict[str, Any]) -> ArrivalModel:
    """The arrival pattern of a model's ``arrivals`` record (InputError when it has no counts)."""
    daily = arrivals.get("daily") or {}
    counts = np.asarray(daily.get("counts") or [], dtype=float)
    if counts.size >= 7 and counts.sum() > 0:
        first = _epoch_day(str(daily["first_day"]))
        return fit(counts, first, source="log daily counts")
    weekly = np.asarray(arrivals.get("per_week") or [], dtype=float)
    if weekly.size >= 1 and weekly.sum() > 0 and arrivals.get("first"):
        first = int(np.floor(_epoch_day(str(arrivals["first"])[:10])))
        span = float(arrivals.get("days", 7.0 * weekly.size))
        last_share = min(max(span / 7.0 - (weekly.size - 1), 1.0 / 7.0), 1.0)  # the last week is partial
        keep = max(int(round(7 * (weekly.size - 1) + 7 * last_share)), 7 * (weekly.size - 1) + 1)
        days = np.repeat(weekly / 7.0, 7)
        days[7 * (weekly.size - 1):] = weekly[-1] / (keep - 7 * (weekly.size - 1))  # the days the last week has
        model = fit(np.round(days[:keep]), first, source="log weekly counts", allow=("trend",))
        model.history = days[:keep]
        model.reasons["weekly"] = "not fitted: the model file keeps weekly counts only (recalibrate for daily ones)"
        return model
    raise InputError("the model keeps no arrival counts", where="arrivals",
                     hint="give --arrivals-per-week, a scenario's arrivals_per_week, or recalibrate from the log")


def fit(counts: np.ndarray, first_day: int, *, source: str,
        allow: tuple[str, ...] = ("weekly", "trend", "yearly")) -> ArrivalModel:
    """The Poisson regression of daily ``counts`` from epoch day ``first_day``, components chosen as the
    module text says."""
    counts = np.asarray(counts, dtype=float)
    n = counts.size
    days = first_day + np.arange(n)
    centre = first_day + n / 2.0
    eligible = [c for c in ("trend", "weekly", "yearly") if c in allow and n >= NEEDS[c]]
    reasons = {"level": "fitted: always"}
    for c in ("trend", "weekly", "yearly"):
        if c not in allow:
            continue
        if c not in eligible:
            reasons[c] = f"not fitted: the log spans {n} days; needs {NEEDS[c]} ({WHY_NEEDED[c]})"

    def solve(components: list[str]) -> tuple[ArrivalModel, float]:
        return _solve(components, counts, days, centre, source, reasons)

    full, _ = solve(eligible)
    phi = full.dispersion
    pen = float(np.log(n))

    def qbic(components: list[str]) -> float:
        m, nll_ = solve(components)
        return 2 * nll_ / phi + pen * m.coef.size

    # backward: from every allowed component, drop the one whose loss lowers the quasi-BIC most, while
    # one does (each is judged beside the others: a trend is not mistaken for a weekday pattern)
    chosen = list(eligible)
    current = qbic(chosen)
    gains: dict[str, float] = {}
    while chosen:
        trials = {c: qbic([k for k in chosen if k != c]) for c in chosen}
        c, q = min(trials.items(), key=lambda kv: kv[1])
        if q >= current:
            gains.update({k: v - current for k, v in trials.items()})
            break
        reasons[c] = f"not fitted: leaving it out lowers the quasi-BIC by {current - q:.1f}"
        chosen.remove(c)
        current = q
    for c in chosen:
        reasons[c] = f"fitted: lowers the quasi-BIC by {gains[c]:.1f}"
    if "trend" in chosen:  # a trend is extrapolated: it must also have forecast the log's own end better
        good, words = _trend_forecasts_well(chosen, counts, days, source)
        if not good:
            reasons["trend"] = reasons["trend"].replace("fitted:", "not fitted:") + f", but {words}"
            chosen = [c for c in chosen if c != "trend"]
        else:
            reasons["trend"] += f"; {words}"
    best, _ = solve([c for c in ("trend", "weekly", "yearly") if c in chosen])  # the design's column order
    best.components = ["level", *best.components]
    best.reasons = {k: reasons[k] for k in ("level", "trend", "weekly", "yearly") if k in reasons}
    best.cov = best.cov * best.dispersion
    best.history_first_day = int(first_day)
    best.history = counts.copy()
    return best


def _solve(components: list[str], counts: np.ndarray, days: np.ndarray, centre: float, source: str,
           reasons: dict[str, str]) -> tuple[ArrivalModel, float]:
    """The Poisson regression with ``components`` (Newton's method, scipy) and its negative log-likelihood."""
    from scipy.optimize import minimize

    m = ArrivalModel(source=source, components=components, reasons=reasons, coef=np.zeros(0),
                     cov=np.zeros((0, 0)), dispersion=1.0, centre_day=centre)
    X = m.design(days)
    b0 = np.zeros(X.shape[1])
    b0[0] = np.log(max(counts.mean(), 1e-9))

    def nll(b):
        eta = np.clip(X @ b, -50, 50)
        return float(np.exp(eta).sum() - counts @ eta)

    def grad(b):
        return X.T @ (np.exp(np.clip(X @ b, -50, 50)) - counts)

    def hess(b):
        return (X * np.exp(np.clip(X @ b, -50, 50))[:, None]).T @ X

    res = minimize(nll, b0, jac=grad, hess=hess, method="trust-exact")
    m.coef = res.x
    mu = np.exp(X @ m.coef)
    dof = max(counts.size - X.shape[1], 1)
    m.dispersion = float(max(((counts - mu) ** 2 / np.maximum(mu, 1e-12)).sum() / dof, 1.0))
    m.cov = np.linalg.pinv(hess(m.coef))
    return m, float(res.fun)


def _trend_forecasts_well(chosen: list[str], counts: np.ndarray, days: np.ndarray, source: str) -> tuple[bool, str]:
    """Whether the trend forecast the log's last quarter (at least 14 days) better than no trend, each fitted
    on the days before it (mean absolute error of the daily counts)."""
    hold = max(14, counts.size // 4)
    train, test = slice(0, counts.size - hold), slice(counts.size - hold, counts.size)
    centre = days[train].mean() + 0.5
    errors = []
    for comps in (chosen, [c for c in chosen if c != "trend"]):
        m, _ = _solve(comps, counts[train], days[train], centre, source, {})
        errors.append(float(np.abs(m.mean(days[test]) - counts[test]).mean()))
    return errors[0] < errors[1], f"the last {hold} days, forecast from the days before: MAE {errors[0]:.1f} a " \
                                  f"day with it, {errors[1]:.1f} without"


def _coef_names(components: list[str]) -> list[str]:
    names = ["level_log_per_day"]
    if "trend" in components:
        names.append("trend_log_per_year")
    if "weekly" in components:
        names.extend(f"weekday_{d}" for d in ("fri", "sat", "sun", "mon", "tue", "wed"))  # vs Thursday
    if "yearly" in components:
        for h in range(1, HARMONICS + 1):
            names.extend([f"yearly_sin_{h}", f"yearly_cos_{h}"])
    return names


def _epoch_day(text: str) -> float:
    """An ISO date or time as days since 1970-01-01 UTC."""
    from datetime import UTC, datetime

    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp() / 86400.0


def _date(day: int) -> str:
    """An epoch day as an ISO date."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(day) * 86400.0, tz=UTC).strftime("%Y-%m-%d")
