"""MIKU-PAL desktop app (PySide6): a thin view over `pipeline` and the project store.

Start it with `mikupal` / `mikupal gui [PROJECT]`, or `python -m mikupal_gui [PROJECT]`.
`pipeline` never imports this package; this package imports Qt at module level.
"""

# Before any signal is emitted: works around PySide6 6.12.0's Signal.emit refcount bug (the
# run panel re-emits thousands of runner events) and warns about the binding once.
from . import qt_compat  # noqa: E402,F401
