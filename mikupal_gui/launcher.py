"""The `mikupal` console script: the headless CLI (`mikupal.cli`) with the desktop app wired in.

The pipeline never imports this package; the app registers itself here, so `mikupal gui` and
bare `mikupal` open it while every other command stays free of Qt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def launch(project: Optional[Path]) -> int:
    from mikupal.cli.common import fail
    from mikupal.project import DamagedProjectError, check_database

    if project is not None:
        try:
            check_database(project)  # before Qt: one line on stderr, not a dialog
        except DamagedProjectError as e:
            raise fail(str(e))
    try:
        from .app import main as gui_main
    except ImportError as e:
        raise fail(f"the desktop app cannot start ({e}); install the Qt libraries (see README, Troubleshooting)", 1)
    return int(gui_main(str(project) if project else None) or 0)


def main() -> None:
    from mikupal.cli import main as cli_main, set_gui_launcher

    set_gui_launcher(launch)
    cli_main()


if __name__ == "__main__":
    main()
