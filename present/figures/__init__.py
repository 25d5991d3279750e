"""Figures, one module per subject: `*_data(...)` returns a record, `draw_*(data, ax)` draws it."""
