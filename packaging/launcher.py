"""Entry point frozen by PyInstaller: the same `mikupal` CLI (bare = the desktop app)."""
from pipeline.cli import main

if __name__ == "__main__":
    main()
