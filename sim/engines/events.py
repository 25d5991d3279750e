"""Simulated journeys as an event log's rows (the contract's shape), for `simulate --events-out`.

Unlike the engines, which keep only aggregates, this walks every journey one interaction at a time
(vectorised over the customers still active) and keeps one row per interaction: customer_id,
timestamp, touchpoint, stage after the interaction, persona. The journeys are drawn from the same
model and seed as the run but are their own draw, not the engines' customers one by one. As in the
SimPy engine, a customer entering a stage is bound for one way out, which sets how soon it leaves
(with phase-type stays, phase by phase: a phase's end is no row; see sim/engines/tables.py).
Pure: application/events_out.py writes the tables to Parquet.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from sim._version import __version__
from sim.engines.tables import way_out_tables
from sim.model import Model

if TYPE_CHECKING:
    import pyarrow as pa

EVENTS_METADATA_KEY = b"journey"  # Parquet schema metadata of a simulated event log: journey wrote it


START = np.datetime64("2024-01-01T00:00:00", "ns")  # timestamp of day 0 of the cohort, UTC
NS_PER_DAY = 86_400 * 10**9
CHUNK = 1 << 17  # customers per row group
def event_schema(model: Model) -> pa.Schema:
    """The event log's Parquet schema, with the metadata that says journey wrote it."""
    import pyarrow as pa

    return pa.schema([
        ("customer_id", pa.int64()),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("touchpoint", pa.dictionary(pa.int32(), pa.string())),
        ("stage", pa.dictionary(pa.int32(), pa.string())),
        ("persona", pa.dictionary(pa.int32(), pa.string())),
    ], metadata={EVENTS_METADATA_KEY: f"simulated event log, journey {__version__}".encode()})


def event_tables(model: Model, n_customers: int, seed: np.random.SeedSequence | int, schema: pa.Schema, *,
                 horizon_days: float | None = None, arrival_days: float | None = None) -> Iterator[pa.Table]:
    """The simulated event log of ``n_customers`` journeys, one table (a row group) per chunk of customers.

    Customers arrive uniformly over ``arrival_days`` from 2024-01-01T00:00Z. With ``horizon_days``
    a journey's rows later than that many days after its arrival are left out. Lazy: each chunk is
    simulated when its table is asked for.
    """
    import pyarrow as pa

    # an int seed gets a stream of its own, apart from the replications' SeedSequence(seed).spawn(R)
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)  # the run's "events" stream
    arrival = float(arrival_days if arrival_days is not None else model.arrival_days)
    horizon = np.inf if horizon_days is None else float(horizon_days)
    names = {k: pa.array(v, pa.string()) for k, v in
             (("touchpoint", model.touchpoints), ("stage", model.stages), ("persona", model.personas))}
    n_chunks = max(1, -(-n_customers // CHUNK))
    for i, child in enumerate(ss.spawn(n_chunks)):
        first = i * CHUNK
        size = min(CHUNK, n_customers - first)
        cols = simulate_rows(model, size, child, horizon=horizon, arrival_days=arrival)
        yield pa.table({
            "customer_id": pa.array(cols["customer"] + first, pa.int64()),
            "timestamp": pa.array(START + (cols["time"] * NS_PER_DAY).astype("timedelta64[ns]"),
                                  pa.timestamp("ns", tz="UTC")),
            "touchpoint": pa.DictionaryArray.from_arrays(pa.array(cols["touchpoint"], pa.int32()),
                                                         names["touchpoint"]),
            "stage": pa.DictionaryArray.from_arrays(pa.array(cols["stage"], pa.int32()), names["stage"]),
            "persona": pa.DictionaryArray.from_arrays(pa.array(cols["persona"], pa.int32()), names["persona"]),
        }, schema=schema)


def simulate_rows(model: Model, n: int, ss: np.random.SeedSequence, *, horizon: float = np.inf,
                  arrival_days: float | None = None) -> dict[str, np.ndarray]:
    """Journeys of ``n`` customers, one row per interaction, sorted by customer then time.

    Returns arrays: customer (0..n-1), time (days since the cohort's start), touchpoint, stage
    (after the interaction) and persona codes.
    """
    rng = np.random.default_rng(ss)
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    arrival = float(arrival_days if arrival_days is not None else model.arrival_days)
    if model.sequences:  # touch sequences: walked interaction by interaction, the next from the last
        from sim.engines import walk

        walked = walk.walk(model, walk.Tables(model), n, rng, horizon, arrival, keep_rows=True, cut_at_horizon=True)
        rows = walked["rows"]
        customer = np.concatenate(rows["customer"])
        order = np.argsort(customer, kind="stable")
        return {"customer": customer[order], "time": np.concatenate(rows["time"])[order],
                "touchpoint": np.concatenate(rows["touchpoint"])[order],
                "stage": np.concatenate(rows["stage"])[order], "persona": walked["persona"][customer[order]]}
    persona_cum = np.cumsum(model.persona_share)
    persona = np.minimum(np.searchsorted(persona_cum, rng.random(n), side="right"), P - 1)
    arrive = rng.random(n) * arrival
    # a customer in stage s bound for way out o (drawn on entering s): see sim.engines.tables.way_out_tables
    way = way_out_tables(model)
    q, gap_mean, leave_p = way.q, way.gap_mean, way.leave_p
    way_cum, stay_cum, exit_cum = way.way_cum, way.stay_cum, way.exit_cum
    phase_exit = way.phase_exit
    shaped = model.shaped
    final = S - 1

    stage = np.zeros(n, dtype=np.int64)
    phase = np.zeros(n, dtype=np.int64)  # phases of the stay done (phase-type stays)
    dest = _draw(way_cum[persona, 0], rng.random(n))  # way out of the first stage
    clock = arrive.copy()
    idx = np.arange(n)
    first = True  # the interaction at arrival leaves the first stage with probability q
    rows: dict[str, list[np.ndarray]] = {"customer": [], "time": [], "touchpoint": [], "stage": []}
    while idx.size:
        p, s, o = persona[idx], stage[idx], dest[idx]
        e = q[p, 0] if first else leave_p[p, s, o]
        u = rng.random(idx.size)
        leave = u < e
        cum = np.where(leave[:, None], exit_cum[p, s, o], stay_cum[p, s])
        t = np.minimum(_draw(cum, rng.random(idx.size)), T - 1)
        row = slice(None)
        if shaped and not first:  # a phase ended: the leaving interaction only after the stay's last phase
            silent = leave & (u >= e * phase_exit[p, s, o, np.minimum(phase[idx], phase_exit.shape[-1] - 1)])
            phase[idx[silent]] += 1
            leave &= ~silent
            row = ~silent
        first = False
        moved = leave & (o >= 1)
        new = np.where(moved, o - 1, s)
        rows["customer"].append(idx[row])
        rows["time"].append(clock[idx][row])
        rows["touchpoint"].append(t[row])
        rows["stage"].append(new[row])
        stage[idx] = new
        lapsed = moved & (new < final)
        lapsed[lapsed] = rng.random(int(lapsed.sum())) < model.lapse[p[lapsed], new[lapsed]]
        done = (leave & (o == 0)) | lapsed | (new == final)
        entered = moved & ~done
        dest[idx[entered]] = _draw(way_cum[p[entered], new[entered]], rng.random(int(entered.sum())))
        phase[idx[entered]] = 0
        idx = idx[~done]
        if idx.size:
            clock[idx] += rng.standard_exponential(idx.size) * gap_mean[persona[idx], stage[idx], dest[idx]]
            idx = idx[clock[idx] - arrive[idx] <= horizon]  # the next interaction falls past the horizon
    customer = np.concatenate(rows["customer"])
    order = np.argsort(customer, kind="stable")  # interactions were appended in journey order
    return {
        "customer": customer[order],
        "time": np.concatenate(rows["time"])[order],
        "touchpoint": np.concatenate(rows["touchpoint"])[order],
        "stage": np.concatenate(rows["stage"])[order],
        "persona": persona[customer[order]],
    }


def _draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row of cumulative probabilities ``cum`` [m, K] with uniforms ``u`` [m]."""
    return (u[:, None] >= cum).sum(axis=1)

