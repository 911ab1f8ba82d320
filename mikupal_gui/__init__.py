"""MIKU-PAL desktop app (PySide6): a thin view over `pipeline` and the project store.

Start it with `mikupal` / `mikupal gui [PROJECT]`, or `python -m mikupal_gui [PROJECT]`.
`pipeline` never imports this package; this package imports Qt at module level.
"""
