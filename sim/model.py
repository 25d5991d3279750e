"""The calibrated journey model: dense arrays indexed [persona, stage, touchpoint].

Semantics (one interaction of a customer in a non-final stage ``s``):
  * the touchpoint is ``t`` with probability ``share[p, s, t]``;
  * the interaction moves the customer to a later stage ``s2`` with probability
    ``advance[p, s, t, s2]``, ends the journey with ``drop[p, s, t]``, otherwise the customer
    stays in ``s`` and interacts again;
  * a customer who has just moved into a non-final stage ``s2`` leaves at once (no further
    interaction) with probability ``lapse[p, s2]``;
  * interactions in stage ``s`` form a Poisson process of ``rate[p, s]`` per day: the gap after an
    interaction that leaves the customer in ``s`` is exponential with mean ``1 / rate[p, s]``;
    ``rate * share`` is the touchpoint's own interaction rate;
  * the first interaction happens at arrival; the final stage is absorbing.

Way-out-specific dwell (``leave_speed[p, s, o]``, default 1): the interactions above make a stay in
a stage end after an exponential time of rate ``rate * q`` (q = P(an interaction leaves the stage)),
whatever the way out. Real journeys are not so uniform (approved loans leave review sooner than
cancelled ones), so a customer entering a stage has a way out ``o`` (0 drop-off, 1 + u moved to
u) drawn with the stage's probabilities ``out / q`` and leaves after an exponential time of rate
``rate * q * leave_speed[p, s, o]``; meanwhile staying interactions come at ``rate * (1 - q)``. In
the first stage the interaction at arrival still leaves at once with probability q. Speeds of 1
give back the interaction-by-interaction model exactly; a speed of 1.25 means customers leaving
that way do so 1.25 times as fast. Speeds are relative to ``rate * q``, so a what-if that changes
drop-off or advance changes every way out's dwell as the plain model would. Calibration scales them
so that sum_o way_o / speed_o = 1 in every stage (the mean stay is the plain model's 1 / (rate * q)):
then ``share``, ``drop`` and ``advance`` are exactly the per-interaction probabilities the model
implies (expected drop-offs / expected interactions at a touchpoint, and so on), whatever the speeds.

Phase-type stays (``phases[p, s, o, k - 1]``, optional, ``--dwell phases``): a stay bound for way
out o is not exponential but takes k phases with probability ``phases[p, s, o, k - 1]``, each phase
an exponential time of rate ``lam = kbar * mu_o`` (kbar = sum_k k * phases[..., k - 1], mu_o the leave
rate above), so the stay is a mixture of Erlangs with the same mean 1 / mu_o as the way-out model
(sim/phases.py). Only the shape of the time changes: ways out, their probabilities, staying
interactions (rate * (1 - q) while in the stage) and every eventual answer are as above, and a
speed or a what-if that changes ``mu_o`` scales all its phase rates. ``phases = None`` (or one phase
everywhere) is the way-out model.

Touch sequences (``follow[p, s, l, t]``, optional, with plain dwell only): the next touchpoint
depends on the last one in the stage, as in first-order Markov attribution. The first interaction
in a stage meets ``t`` with ``share[p, s, t]``; after a staying interaction at ``l`` the next one
comes after an exponential gap of rate ``rate * F_l`` (F_l = sum_t follow[p, s, l, t], 1 as
calibrated) and meets ``t`` with probability ``follow[p, s, l, t] / F_l``. ``rate * follow[l, t]``
is touchpoint t's own interaction rate after l, so a what-if that makes t met f times as often
multiplies that column (rows need not sum to 1 after one). ``follow = None`` is the model above:
every row equal to ``share``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError, ModelError, closest
from sim.limits import loads_json, read_bytes
from sim.phases import kbar, phases_from, shape_record

SCHEMA_VERSION = 1
MODEL_KIND = "journey.model"
EXTRA_KEYS = ("experience", "personas_discovered", "value")  # optional top-level sections read back into Model.extras
DEFAULT_STAGES = ("awareness", "consideration", "decision", "retention", "advocacy")


@dataclass
class Model:
    """The journey model: stages, touchpoints, personas and the per-cell probabilities and rates."""

    stages: list[str]
    touchpoints: list[str]
    personas: list[str]
    conversion_stage: str
    persona_share: np.ndarray  # [P]
    share: np.ndarray  # [P, S, T], rows of non-final stages sum to 1
    advance: np.ndarray  # [P, S, T, S], zero at and below the diagonal
    drop: np.ndarray  # [P, S, T]
    lapse: np.ndarray  # [P, S]
    rate: np.ndarray  # [P, S] interactions per day
    leave_speed: np.ndarray | None = None  # [P, S, 1 + S] relative speed per way out; None -> all 1
    follow: np.ndarray | None = None  # [P, S, T, T] next touchpoint's relative rate given the last; None: share
    phases: np.ndarray | None = None  # [P, S, 1 + S, K] P(a stay takes k phases); None: exponential stays
    arrival_days: float = 180.0
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    estimator: dict[str, Any] = field(default_factory=dict)
    log_summary: dict[str, Any] = field(default_factory=dict)
    arrivals: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # optional sections kept verbatim (e.g. experience)

    def __post_init__(self) -> None:
        if self.leave_speed is None:
            self.leave_speed = np.ones((self.n_personas, self.n_stages, 1 + self.n_stages))

    # ---- shape and names -------------------------------------------------------------
    @property
    def n_personas(self) -> int:
        """How many personas."""
        return len(self.personas)

    @property
    def n_stages(self) -> int:
        """How many stages."""
        return len(self.stages)

    @property
    def n_touchpoints(self) -> int:
        """How many touchpoints."""
        return len(self.touchpoints)

    @property
    def conversion_index(self) -> int:
        """The conversion stage's index."""
        return self.stages.index(self.conversion_stage)

    def stage_index(self, name: str, *, file: object = None, where: str = "stage") -> int:
        """The index of stage ``name``; InputError (with a did-you-mean) if unknown."""
        return _index(self.stages, name, file, where, "stage")

    def touchpoint_index(self, name: str, *, file: object = None, where: str = "touchpoint") -> int:
        """The index of touchpoint ``name``; InputError (with a did-you-mean) if unknown."""
        return _index(self.touchpoints, name, file, where, "touchpoint")

    def persona_index(self, name: str, *, file: object = None, where: str = "persona") -> int:
        """The index of persona ``name``; InputError (with a did-you-mean) if unknown."""
        return _index(self.personas, name, file, where, "persona")

    # ---- derived quantities ----------------------------------------------------------
    @property
    def stay(self) -> np.ndarray:
        """P(an interaction neither advances nor ends the journey) [P, S, T]."""
        return np.clip(1.0 - self.drop - self.advance.sum(axis=-1), 0.0, 1.0)

    def stage_kernel(self) -> tuple[np.ndarray, np.ndarray]:
        """Per interaction in stage s: P(stay) [P, S] and P(outcome) [P, S, 1 + S].

        Outcome 0 is "drop", outcome 1 + s2 is "advance to s2".
        """
        stay = (self.share * self.stay).sum(axis=-1)
        out = np.zeros((self.n_personas, self.n_stages, 1 + self.n_stages))
        out[:, :, 0] = (self.share * self.drop).sum(axis=-1)
        out[:, :, 1:] = np.einsum("pst,pstu->psu", self.share, self.advance)
        final = self.n_stages - 1
        stay[:, final] = 0.0
        out[:, final, :] = 0.0
        return stay, out

    def way_out(self) -> tuple[np.ndarray, np.ndarray]:
        """P(an interaction leaves the stage) q [P, S] and, given it leaves, P(way out) [P, S, 1 + S]."""
        stay, out = self.stage_kernel()
        q = np.maximum(1.0 - stay, 1e-15)  # above 0: a stage nobody leaves still ends (after a long time)
        return q, out / q[..., None]

    def leave_rates(self) -> np.ndarray:
        """Rate of leaving a stage by each way out, per day, for a customer bound that way [P, S, 1 + S]."""
        q, _ = self.way_out()
        return (self.rate * q)[..., None] * self.leave_speed

    @property
    def plain_dwell(self) -> bool:
        """True when every leave speed is 1 and every stay exponential (the interaction-by-interaction model)."""
        return bool(np.all(self.leave_speed == 1.0)) and not self.shaped

    @property
    def shaped(self) -> bool:
        """True when some stay has more than one phase (phase-type stays, ``--dwell phases``)."""
        return self.phases is not None and bool(self.phases[..., 1:].sum() > 0)

    def phase_rates(self) -> np.ndarray:
        """Rate of each phase of a stay bound for each way out, per day [P, S, 1 + S] (exponential: mu)."""
        if self.phases is None:
            return self.leave_rates()
        return kbar(self.phases) * self.leave_rates()

    def copy(self) -> Model:
        """A deep copy: arrays and sections copied, nothing shared."""
        return Model(
            stages=list(self.stages), touchpoints=list(self.touchpoints),
            personas=list(self.personas), conversion_stage=self.conversion_stage,
            persona_share=self.persona_share.copy(), share=self.share.copy(),
            advance=self.advance.copy(), drop=self.drop.copy(), lapse=self.lapse.copy(),
            rate=self.rate.copy(), leave_speed=self.leave_speed.copy(), arrival_days=self.arrival_days,
            follow=None if self.follow is None else self.follow.copy(),
            phases=None if self.phases is None else self.phases.copy(),
            counts={k: v.copy() for k, v in self.counts.items()},
            estimator=json.loads(json.dumps(self.estimator)),
            log_summary=json.loads(json.dumps(self.log_summary)),
            arrivals=json.loads(json.dumps(self.arrivals)),
            provenance=json.loads(json.dumps(self.provenance)),
            extras=json.loads(json.dumps(self.extras)),
        )

    def check(self, *, file: object = None) -> None:
        """Raise ModelError unless the arrays are a valid model."""
        P, S, T = self.n_personas, self.n_stages, self.n_touchpoints
        shapes = {"persona_share": (P,), "share": (P, S, T), "advance": (P, S, T, S),
                  "drop": (P, S, T), "lapse": (P, S), "rate": (P, S), "leave_speed": (P, S, 1 + S)}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ModelError(f"array has shape {arr.shape}, expected {shape}", file=file, where=name)
            bad = ~np.isfinite(arr) | (arr < 0)
            if bad.any():
                raise ModelError("values must be finite and non-negative", file=file, where=self._where(name, bad),
                                 value=float(arr[bad][0]))
        if S < 2:
            raise ModelError("a model needs at least two stages", file=file, where="stages", value=self.stages)
        if self.conversion_stage not in self.stages:
            raise ModelError("conversion stage is not a stage", file=file, where="conversion_stage",
                             value=self.conversion_stage, hint=closest(self.conversion_stage, self.stages))
        for label, names in (("stages", self.stages), ("touchpoints", self.touchpoints), ("personas", self.personas)):
            if len(set(names)) != len(names) or not names:
                raise ModelError("names must be unique and non-empty", file=file, where=label, value=names)
        if abs(self.persona_share.sum() - 1) > 1e-6:
            raise ModelError("persona shares must sum to 1", file=file, where="personas",
                             value=float(self.persona_share.sum()))
        live = self.share[:, :-1, :].sum(axis=-1)
        bad = np.abs(live - 1) > 1e-6
        if bad.any():
            raise ModelError("touchpoint shares of a stage must sum to 1", file=file,
                             where=self._where("lapse", bad).removesuffix(".lapse"), value=float(live[bad][0]))
        leave = self.drop + self.advance.sum(-1)
        bad = leave > 1 + 1e-9
        if bad.any():
            raise ModelError("advance + drop_off exceeds 1", file=file, where=self._where("drop", bad).removesuffix(
                ".drop_off"), value=float(leave[bad][0]))
        if np.any(np.tril(np.ones((S, S))).astype(bool) & (self.advance > 0).any(axis=(0, 2))):
            raise ModelError("advance may only move to a later stage", file=file, where="advance")
        if np.any(self.lapse > 1):
            raise ModelError("lapse must be <= 1", file=file, where=self._where("lapse", self.lapse > 1),
                             value=float(self.lapse.max()))
        bad = self.rate[:, :-1] <= 0
        if bad.any():
            raise ModelError("interactions per day must be > 0", file=file, where=self._where("rate", bad), value=0.0)
        bad = self.leave_speed[:, :-1] <= 0
        if bad.any():
            raise ModelError("leave speeds must be > 0", file=file, where=self._where("leave_speed", bad),
                             value=float(self.leave_speed[:, :-1][bad][0]))
        if self.phases is not None:
            self._check_phases(file)
        if self.follow is not None:
            if self.follow.shape != (P, S, T, T):
                raise ModelError(f"array has shape {self.follow.shape}, expected {(P, S, T, T)}", file=file,
                                 where="next_touchpoint")
            bad = ~np.isfinite(self.follow) | (self.follow < 0)
            if bad.any():
                raise ModelError("next-touchpoint rates must be finite and non-negative", file=file,
                                 where=self._follow_where(bad), value=float(self.follow[bad][0]))
            # a touchpoint met in a stage needs a row to go on from
            met = (self.share[:, :-1] > 0) | (self.follow[:, :-1].sum(-2) > 0)
            empty = met & (self.follow[:, :-1].sum(-1) <= 0) & (self.stay[:, :-1] > 0)
            if empty.any():
                raise ModelError("a touchpoint customers stay after needs a next touchpoint", file=file,
                                 where=self._follow_where(np.repeat(empty[..., None], T, axis=-1)), value=0.0)
            if not self.plain_dwell:
                raise ModelError("touch sequences need one time to leave per stage (leave speeds of 1, one phase)",
                                 file=file, where="next_touchpoint",
                                 hint="calibrate with --dwell plain --touch-order 1")

    def _check_phases(self, file: object) -> None:
        P, S = self.n_personas, self.n_stages
        ph = self.phases
        if ph.ndim != 4 or ph.shape[:3] != (P, S, 1 + S) or ph.shape[3] < 1:
            raise ModelError(f"array has shape {ph.shape}, expected {(P, S, 1 + S, 'K')}", file=file,
                             where="dwell_shape")
        bad = ~np.isfinite(ph) | (ph < 0)
        bad |= (np.abs(ph.sum(-1) - 1.0) > 1e-6)[..., None]
        if bad.any():
            p, s, o, _ = (int(i) for i in np.argwhere(bad)[0])
            raise ModelError("phase weights must be non-negative and sum to 1", file=file,
                             where=f"journey.{self.personas[p]}.{self.stages[s]}.dwell_shape.{self.way_name(o)}.weights",
                             value=[float(x) for x in ph[p, s, o]])

    def _where(self, name: str, bad: np.ndarray) -> str:
        """Where in the model JSON the first True cell of ``bad`` (indexed like array ``name``) lives."""
        idx = [int(i) for i in np.argwhere(bad)[0]]
        if name == "persona_share":
            return f"personas.{self.personas[idx[0]]}.share"
        path = f"journey.{self.personas[idx[0]]}.{self.stages[idx[1]]}"
        if name == "leave_speed":
            return f"{path}.leave_speed.{self.way_name(idx[2])}"
        if name in ("lapse", "rate"):
            return f"{path}.{'lapse' if name == 'lapse' else 'interactions_per_day'}"
        path += f".touchpoints.{self.touchpoints[idx[2]]}"
        if name == "advance":
            return f"{path}.advance.{self.stages[idx[3]]}"
        return f"{path}.{'drop_off' if name == 'drop' else name}"

    def _follow_where(self, bad: np.ndarray) -> str:
        p, st, last, t = (int(i) for i in np.argwhere(bad)[0])
        return (f"journey.{self.personas[p]}.{self.stages[st]}.touchpoints.{self.touchpoints[last]}"
                f".next_touchpoint.{self.touchpoints[t]}")

    @property
    def sequences(self) -> bool:
        """True when the next touchpoint depends on the last one (``follow`` is set)."""
        return self.follow is not None

    def next_rates(self) -> np.ndarray:
        """Relative rate of each next touchpoint given the last one in the stage [P, S, T, T] (rows of
        ``share`` when the model has no touch sequences)."""
        if self.follow is not None:
            return self.follow
        return np.broadcast_to(self.share[:, :, None, :], self.share.shape[:2] + (self.n_touchpoints,) * 2)

    def ways(self, s: int) -> list[int]:
        """The ways out of stage s, as indices into leave_speed's last axis."""
        return ways_out(self.n_stages, s)

    def way_name(self, o: int) -> str:
        """The name of way out ``o``: drop_off or the stage moved to."""
        return way_label(self.stages, o)

    # ---- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The model file's JSON as a dict (keys in the file's order)."""
        S = self.n_stages
        journey: dict[str, Any] = {}
        cnt = self.counts
        leave_rates = self.leave_rates()
        for p, persona in enumerate(self.personas):
            per_stage: dict[str, Any] = {}
            for s in range(S - 1):
                ways = self.ways(s)
                tps: dict[str, Any] = {}
                for t, tp in enumerate(self.touchpoints):
                    cell: dict[str, Any] = {
                        "share": _r(self.share[p, s, t]),
                        "advance": {self.stages[u]: _r(self.advance[p, s, t, u]) for u in range(s + 1, S)},
                        "drop_off": _r(self.drop[p, s, t]),
                        "rate_per_day": _r(self.rate[p, s] * self.share[p, s, t]),
                    }
                    if self.follow is not None:  # P(next touchpoint | this one), as relative rates
                        cell["next_touchpoint"] = {self.touchpoints[u]: _r(self.follow[p, s, t, u])
                                                   for u in range(len(self.touchpoints))}
                    if cnt:
                        cell["counts"] = {
                            "interactions": int(cnt["interactions"][p, s, t]),
                            "decided": int(cnt["decided"][p, s, t]),
                            "advanced": {self.stages[u]: int(cnt["advanced"][p, s, t, u]) for u in range(s + 1, S)},
                            "dropped": _count(cnt["dropped"][p, s, t]),
                            "stayed": _count(cnt["stayed"][p, s, t]),
                        }
                        if "uncertain" in cnt:  # of the dropped / stayed, how much the quiet time left open
                            cell["counts"]["uncertain"] = _count(cnt["uncertain"][p, s, t])
                        if "first_in_stage" in cnt:  # interactions that were a visit's first in the stage
                            cell["counts"]["first_in_stage"] = int(cnt["first_in_stage"][p, s, t])
                        if "followed" in cnt:  # staying interactions here, by the next touchpoint met
                            cell["counts"]["followed_by"] = {self.touchpoints[u]: int(cnt["followed"][p, s, t, u])
                                                             for u in range(len(self.touchpoints))}
                        cell["pooled"] = bool(cnt["decided"][p, s, t] < self.estimator.get("sparse_below", 30))
                    tps[tp] = cell
                stage_rec: dict[str, Any] = {
                    "gap_days": _r(1.0 / self.rate[p, s]) if self.rate[p, s] > 0 else None,
                    "interactions_per_day": _r(self.rate[p, s]),
                    "lapse": _r(self.lapse[p, s]),
                    "leave_speed": {self.way_name(o): _r(self.leave_speed[p, s, o]) for o in ways},
                    "mean_days_to_leave": {self.way_name(o): _r(1.0 / leave_rates[p, s, o]) for o in ways},
                    "touchpoints": tps,
                }
                if self.phases is not None:  # readable: phases, their weights, mean and percentiles in days
                    stage_rec["dwell_shape"] = {self.way_name(o): shape_record(self.phases[p, s, o],
                                                                                1.0 / leave_rates[p, s, o])
                                                for o in ways}
                if cnt:
                    stage_rec["counts"] = {
                        "entered": int(cnt["entered"][p, s]), "lapsed": _count(cnt["lapsed"][p, s]),
                        "gaps": int(cnt["gaps"][p, s]), "days_at_risk": _r(float(cnt["days_at_risk"][p, s])),
                    }
                    if "uncertain_lapse" in cnt:
                        stage_rec["counts"]["uncertain_lapse"] = _count(cnt["uncertain_lapse"][p, s])
                    if "leave_events" in cnt:  # evidence behind leave_speed (expected counts under censoring)
                        stage_rec["counts"]["leaves"] = {self.way_name(o): _count(cnt["leave_events"][p, s, o])
                                                         for o in ways}
                        stage_rec["counts"]["leave_days"] = {self.way_name(o): _r(cnt["leave_days"][p, s, o])
                                                             for o in ways}
                per_stage[self.stages[s]] = stage_rec
            journey[persona] = per_stage
        personas = {}
        for p, persona in enumerate(self.personas):
            rec: dict[str, Any] = {"share": _r(self.persona_share[p])}
            if cnt and "customers" in cnt:
                rec["customers"] = int(cnt["customers"][p])
            personas[persona] = rec
        out: dict[str, Any] = {
            "kind": MODEL_KIND,
            "schema_version": SCHEMA_VERSION,
            "stages": list(self.stages),
            "conversion_stage": self.conversion_stage,
            "touchpoints": list(self.touchpoints),
            "personas": personas,
            "arrival_days": _r(self.arrival_days),
            "arrivals": self.arrivals,
            "estimator": self.estimator,
            "log": self.log_summary,
            "journey": journey,
            "provenance": self.provenance,
        }
        out.update({k: v for k, v in self.extras.items() if v and k not in out})
        return out

    def to_json(self) -> str:
        """The model file's text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, file: object = None) -> Model:
        """A model from its JSON dict; ModelError says what is wrong."""
        if not isinstance(data, dict) or data.get("kind") != MODEL_KIND:
            raise ModelError("not a journey model file", file=file, where="kind",
                             value=data.get("kind") if isinstance(data, dict) else type(data).__name__,
                             hint="make one with `journey calibrate EVENTS --out model.json`")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ModelError("unknown model schema version", file=file, where="schema_version", value=version,
                             hint=f"this journey reads version {SCHEMA_VERSION}; recalibrate the model")
        # the containers' types first: a string where a list belongs would be read letter by letter
        for key, kind, noun in (("stages", list, "a list of names"), ("touchpoints", list, "a list of names"),
                                ("personas", dict, "an object"), ("journey", dict, "an object")):
            value = data.get(key)
            if key in data and not (isinstance(value, kind)
                                    and (kind is dict or all(isinstance(x, str) for x in value))):
                raise ModelError(f"must be {noun}", file=file, where=key,
                                 value=value if isinstance(value, (str, int, float)) else type(value).__name__,
                                 hint="recalibrate with `journey calibrate`")
        try:
            stages = [str(s) for s in data["stages"]]
            touchpoints = [str(t) for t in data["touchpoints"]]
            personas_rec = data["personas"]
            personas = [str(p) for p in personas_rec]
            P, S, T = len(personas), len(stages), len(touchpoints)
            persona_share = np.array([float(personas_rec[p]["share"]) for p in personas])
            share = np.zeros((P, S, T))
            advance = np.zeros((P, S, T, S))
            drop = np.zeros((P, S, T))
            lapse = np.zeros((P, S))
            rate = np.zeros((P, S))
            leave_speed = np.ones((P, S, 1 + S))
            follow = None
            shapes: dict[tuple[int, int, int], list[float]] = {}
            for p, persona in enumerate(personas):
                for s in range(S - 1):
                    st = data["journey"][persona][stages[s]]
                    lapse[p, s] = float(st["lapse"])
                    rate[p, s] = float(st["interactions_per_day"])
                    for name, value in st.get("leave_speed", {}).items():  # optional: 1 = plain model
                        ways = [way_label(stages, o) for o in ways_out(S, s)]
                        if name not in ways:
                            raise ModelError("unknown way out of the stage", file=file, value=name,
                                             where=f"journey.{persona}.{stages[s]}.leave_speed.{name}",
                                             hint=closest(name, ways))
                        leave_speed[p, s, way_index(stages, name)] = float(value)
                    for name, rec in st.get("dwell_shape", {}).items():  # optional: phase-type stays
                        ways = [way_label(stages, o) for o in ways_out(S, s)]
                        if name not in ways:
                            raise ModelError("unknown way out of the stage", file=file, value=name,
                                             where=f"journey.{persona}.{stages[s]}.dwell_shape.{name}",
                                             hint=closest(name, ways))
                        shapes[(p, s, way_index(stages, name))] = [float(x) for x in rec["weights"]]
                    for t, tp in enumerate(touchpoints):
                        cell = st["touchpoints"][tp]
                        share[p, s, t] = float(cell["share"])
                        if "next_touchpoint" in cell:
                            if follow is None:
                                follow = np.zeros((P, S, T, T))
                            for name, value in cell["next_touchpoint"].items():
                                follow[p, s, t, touchpoints.index(name)] = float(value)
                        drop[p, s, t] = float(cell["drop_off"])
                        for name, value in cell["advance"].items():
                            advance[p, s, t, stages.index(name)] = float(value)
            phases = phases_from(shapes, P, S)
            model = cls(
                stages=stages, touchpoints=touchpoints, personas=personas,
                conversion_stage=str(data["conversion_stage"]), persona_share=persona_share,
                share=share, advance=advance, drop=drop, lapse=lapse, rate=rate, leave_speed=leave_speed,
                follow=follow, phases=phases, arrival_days=float(data.get("arrival_days", 180.0)),
                counts=_counts_from_dict(data, personas, stages, touchpoints),
                estimator=dict(data.get("estimator", {})), log_summary=dict(data.get("log", {})),
                arrivals=dict(data.get("arrivals", {})), provenance=dict(data.get("provenance", {})),
                extras={k: data[k] for k in EXTRA_KEYS if k in data},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            key = isinstance(exc, KeyError)
            raise ModelError("model file is incomplete or malformed" + ("" if key else f" ({exc})"), file=file,
                             where=f"key {exc}" if key else None,
                             hint="recalibrate with `journey calibrate`") from None
        model.check(file=file)
        return model

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read a model file."""
        path = Path(path)
        raw = read_bytes(path, "model file")  # a regular file of a sane size: a FIFO would block
        try:
            text = raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark from an editor
        except UnicodeDecodeError:
            raise ModelError("not a text file (model JSON expected)", file=path,
                             hint="make one with `journey calibrate EVENTS --out model.json`") from None
        try:
            data = loads_json(text, path)
        except json.JSONDecodeError as exc:
            raise ModelError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=path,
                             hint="the file is truncated or not JSON; recalibrate") from None
        return cls.from_dict(data, file=path)


def ways_out(n_stages: int, s: int) -> list[int]:
    """Ways out of stage s as indices: 0 drop-off, then 1 + u for every later stage u."""
    return [0, *range(s + 2, n_stages + 1)]


def way_label(stages: list[str], o: int) -> str:
    """A way out's name in model files and scenarios: drop_off or the stage moved to."""
    return "drop_off" if o == 0 else stages[o - 1]


def way_index(stages: list[str], name: str) -> int:
    """The index of a way out named by ``way_label`` (the name must be valid)."""
    return 0 if name == "drop_off" else 1 + stages.index(name)


def _index(names: list[str], name: str, file: object, where: str, noun: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise InputError(f"unknown {noun}", file=file, where=where, value=name,
                         hint=closest(name, names)) from None


def _count(x: float) -> int | float:
    """A count as written: whole numbers as integers, expected (weighted) counts to 1e-3."""
    x = float(x)
    return int(x) if x.is_integer() else round(x, 3)


def _r(x: float) -> float:
    """Round for a readable file; 12 significant digits keep exact answers stable."""
    return float(f"{float(x):.12g}")


def _counts_from_dict(data: dict, personas, stages, touchpoints) -> dict[str, np.ndarray]:
    P, S, T = len(personas), len(stages), len(touchpoints)
    journey = data["journey"]
    first = journey[personas[0]][stages[0]]["touchpoints"][touchpoints[0]]
    if "counts" not in first:
        return {}
    c = {k: np.zeros((P, S, T), dtype=np.int64) for k in ("interactions", "decided")}
    c.update({k: np.zeros((P, S, T)) for k in ("dropped", "stayed")})  # expected counts (cure model)
    c["advanced"] = np.zeros((P, S, T, S), dtype=np.int64)
    c["entered"] = np.zeros((P, S), dtype=np.int64)
    c["lapsed"] = np.zeros((P, S))
    c["gaps"] = np.zeros((P, S), dtype=np.int64)
    c["days_at_risk"] = np.zeros((P, S))
    c["customers"] = np.array([int(data["personas"][p].get("customers", 0)) for p in personas], dtype=np.int64)
    for p, persona in enumerate(personas):
        for s in range(S - 1):
            st = journey[persona][stages[s]]
            sc = st.get("counts", {})
            c["entered"][p, s] = int(sc.get("entered", 0))
            c["lapsed"][p, s] = float(sc.get("lapsed", 0))
            c["gaps"][p, s] = int(sc.get("gaps", 0))
            c["days_at_risk"][p, s] = float(sc.get("days_at_risk", 0.0))
            if "uncertain_lapse" in sc:
                c.setdefault("uncertain_lapse", np.zeros((P, S)))[p, s] = float(sc["uncertain_lapse"])
            for key, name in (("leave_events", "leaves"), ("leave_days", "leave_days")):
                for way, value in sc.get(name, {}).items():
                    c.setdefault(key, np.zeros((P, S, 1 + S)))[p, s, way_index(stages, way)] = float(value)
            for t, tp in enumerate(touchpoints):
                cc = st["touchpoints"][tp]["counts"]
                for k in ("interactions", "decided"):
                    c[k][p, s, t] = int(cc[k])
                for k in ("dropped", "stayed"):
                    c[k][p, s, t] = float(cc[k])
                if "uncertain" in cc:
                    c.setdefault("uncertain", np.zeros((P, S, T)))[p, s, t] = float(cc["uncertain"])
                if "first_in_stage" in cc:
                    firsts = c.setdefault("first_in_stage", np.zeros((P, S, T), dtype=np.int64))
                    firsts[p, s, t] = int(cc["first_in_stage"])
                for name, value in cc.get("followed_by", {}).items():
                    followed = c.setdefault("followed", np.zeros((P, S, T, T), dtype=np.int64))
                    followed[p, s, t, touchpoints.index(name)] = int(value)
                for name, value in cc["advanced"].items():
                    c["advanced"][p, s, t, stages.index(name)] = int(value)
    return c
