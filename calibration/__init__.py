"""journey.calibration: load and check event logs, estimate a Model, backtest it."""
