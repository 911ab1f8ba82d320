"""MIKU-PAL headless core: stages, store, runner, metrics, export. Imports no Qt."""

__version__ = "0.1.0"
