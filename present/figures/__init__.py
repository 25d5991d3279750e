"""Figures by subject: each module's ``*_data(...)`` returns a record, its ``draw_*(data, ax)`` draws it."""
