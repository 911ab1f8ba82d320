"""Dialogs of the desktop app: open/create a project, settings (API keys), export, models."""
from .export_dialog import ExportDialog
from .models_dialog import ModelsDialog
from .project_dialog import ProjectDialog, add_recent, recent_projects
from .settings_dialog import SettingsDialog

__all__ = ["ExportDialog", "ModelsDialog", "ProjectDialog", "SettingsDialog", "add_recent", "recent_projects"]
