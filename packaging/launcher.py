"""Entry point frozen by PyInstaller: the same `mikupal` CLI (bare = the desktop app)."""
from mikupal_gui.launcher import main

if __name__ == "__main__":
    main()
