"""Façade over present/figures/: the names sim/ and calibration/ call as ``present.plots.<name>`` today.

It goes away once those callers import from ``present.figures.<subject>`` directly.
"""
from __future__ import annotations

from present.figures.backtest import BacktestData, backtest_data, draw_backtest
from present.figures.common import (
    BASELINE_COLOUR,
    OBSERVED_COLOUR,
    PERSONA_COLOURS,
    SCENARIO_COLOURS,
    figure,
    palette,
    pct,
    png_bytes,
    points,
    render_png,
)
from present.figures.evidence import EvidenceData, draw_evidence, dwell_rows, evidence_data
from present.figures.funnel import FunnelData, draw_funnel, funnel_data
from present.figures.journey_map import JourneyMapData, draw_emotion_curve, draw_journey_map, journey_map_data
from present.figures.optimization import (
    AllocationData,
    HistoryData,
    MoneyResponseData,
    ResponseData,
    allocation_data,
    draw_allocation,
    draw_history,
    draw_money_response,
    draw_response,
    history_data,
    marginal_words,
    money_response_data,
    response_data,
    response_effect,
)
from present.figures.uplift import (
    PersonaUpliftData,
    UpliftData,
    draw_persona_uplift,
    draw_uplift,
    persona_uplift_data,
    uplift_data,
)

__all__ = [
    "BASELINE_COLOUR", "OBSERVED_COLOUR", "PERSONA_COLOURS", "SCENARIO_COLOURS", "AllocationData", "BacktestData",
    "EvidenceData", "FunnelData", "HistoryData", "JourneyMapData", "MoneyResponseData", "PersonaUpliftData",
    "ResponseData", "UpliftData", "allocation_data", "backtest_data", "draw_allocation", "draw_backtest",
    "draw_emotion_curve", "draw_evidence", "draw_funnel", "draw_history", "draw_journey_map", "draw_money_response",
    "draw_persona_uplift", "draw_response", "draw_uplift", "dwell_rows", "evidence_data", "figure", "funnel_data",
    "history_data", "journey_map_data", "marginal_words", "money_response_data", "palette", "pct",
    "persona_uplift_data", "png_bytes", "points", "render_png", "response_data", "response_effect", "uplift_data",
]
