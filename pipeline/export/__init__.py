"""Dataset export: curated subsets of the reviewed labels as jsonl, Hugging Face audiofolder,
WebDataset shards, Fish-Speech lab folders (one per speaker), ELAN files or lhotse manifests
(see `mikupal export --help`); every format writes the one record schema of fields.py."""
from .dataset import ExportOptions, ExportResult, export_choices, export_dataset, preview_export
from .formats import FORMATS
from .select import ExportError, ExportFilters, assign_splits, select

__all__ = ["FORMATS", "ExportError", "ExportFilters", "ExportOptions", "ExportResult", "assign_splits",
           "export_choices", "export_dataset", "preview_export", "select"]
