"""The `mikupal` command line: the only layer that parses arguments and prints (typer/rich).

Analysis modules return data; each command here turns it into lines. Errors are one line on
stderr naming the item and the fix; exit 2 for bad usage or input, 1 for failures.
"""
from .app import app, main, set_gui_launcher  # noqa: F401
