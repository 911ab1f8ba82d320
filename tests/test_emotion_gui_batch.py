"""The run panel's Batch API choice and the cost estimate next to Start (a real Qt widget)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from emotion_fixtures import project_with_segments  # noqa: E402


def test_batch_choice_reaches_the_command_line_and_the_estimate(qtbot, project, demo_clip):
    from mikupal.emotion.estimate import estimate_project
    from mikupal.project import Project
    from mikupal_gui.run_panel import RunPanel

    project_with_segments(project, demo_clip)
    panel = RunPanel()
    qtbot.addWidget(panel)
    panel.set_project(Project.open(project.root))
    assert not panel.batch.isChecked() and "--set" not in panel.request().args()
    assert panel.estimate.text().startswith("Emotion: 4 answers") and "(batch)" not in panel.estimate.text()
    panel.batch.setChecked(True)
    args = panel.request().args()
    assert args[args.index("--set") + 1] == "emotion.batch=true"
    want = estimate_project(Project.open(project.root, ["emotion.batch=true"])).usd
    assert f"${want:.4f}" in panel.estimate.text() and "(batch)" in panel.estimate.text()
