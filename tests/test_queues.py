"""The SimPy engine's queues against queueing theory (M/M/c, Erlang C)."""
from __future__ import annotations

import math

import numpy as np

from sim.engines import agents
from sim.model import Model


def erlang_c(servers: int, load: float) -> float:
    """P(an arrival waits) in an M/M/c queue with offered load a = lambda / mu < c."""
    below = sum(load**k / math.factorial(k) for k in range(servers))
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    return top / (below + top)


def one_touch_model(arrival_days: float) -> Model:
    """Every customer meets the sales chat once at arrival, then is done: Poisson arrivals to it."""
    model = Model(stages=["start", "done"], touchpoints=["sales_chat"], personas=["all"], conversion_stage="done",
                  persona_share=np.ones(1), share=np.array([[[1.0], [0.0]]]), advance=np.zeros((1, 2, 1, 2)),
                  drop=np.zeros((1, 2, 1)), lapse=np.zeros((1, 2)), rate=np.array([[1.0, 0.0]]),
                  arrival_days=arrival_days)
    model.advance[0, 0, 0, 1] = 1.0
    model.check()
    return model


def test_waits_and_utilisation_match_erlang_c():
    n, days, servers, service = 20_000, 10.0, 3, 1.5  # 1.39 arrivals a minute, utilisation 0.69
    model = one_touch_model(days)
    lam, mu = n / days / 1440.0, 1.0 / service
    load = lam / mu
    p_wait = erlang_c(servers, load)
    mean_wait = p_wait / (servers * mu - lam)
    waited, waits, util = [], [], []
    for seed in range(3):
        result = agents.run(model, n, seed, capacity={"sales_chat": {
            "servers": servers, "service_minutes": service, "patience_minutes": 1e9}})
        q = result.extras["capacity"]["sales_chat"]
        assert q["served"] == n and q["abandoned"] == 0
        waited.append(q["waited"] / n)
        waits.append(q["wait_days_served"] * 1440.0 / n)
        util.append(q["busy_days_in_window"] / q["open_days_in_window"])
    # the queue starts empty, so the simulated waits sit a little below the stationary ones
    assert abs(np.mean(waited) - p_wait) < 0.03
    assert abs(np.mean(waits) - mean_wait) < 0.15 * mean_wait
    assert abs(np.mean(util) - load / servers) < 0.02
    assert result.conversion_rate == 1.0  # infinite patience: nobody is lost in the queue


def test_impatience_loses_customers_in_proportion():
    """With short patience some customers leave the queue, and exactly those journeys are lost."""
    n, days = 20_000, 10.0
    model = one_touch_model(days)
    result = agents.run(model, n, 1, capacity={"sales_chat": {
        "servers": 2, "service_minutes": 1.5, "patience_minutes": 0.5}})  # overloaded: load 2.08 > 2 servers
    q = result.extras["capacity"]["sales_chat"]
    assert q["abandoned"] > 0.05 * n
    assert q["served"] + q["abandoned"] == n
    assert result.reached[:, 1].sum() == q["served"]
    assert result.drop_offs.sum() == q["abandoned"]
