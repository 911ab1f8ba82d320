"""Settings: the commented template, file values, --set overrides and clear errors."""
import tomllib

import pytest

from mikupal import config
from mikupal.project import Project, ProjectError


def test_template_has_every_setting_with_a_comment():
    text = config.template()
    data = tomllib.loads(text)
    assert data == config.defaults()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"setting without comment: {line}"
    for section in ("separate", "vad", "asr", "faces", "asd", "emotion", "models"):
        assert section in data
    assert data["asr"]["model"] == "large-v3" and data["emotion"]["label_set"] == "cowen26"


def test_file_then_set_override(tmp_path):
    p = Project.create(tmp_path / "p")
    cfg_path = p.root / "mikupal.toml"
    cfg_path.write_text(cfg_path.read_text().replace('backend = "gemini"', 'backend = "baseline"'))
    assert Project.open(p.root).config["emotion"]["backend"] == "baseline"
    cfg = Project.open(p.root, ["emotion.backend=openai", "emotion.runs=5", "asr.model=tiny", "vad.padding_s=1"]).config
    assert cfg["emotion"]["backend"] == "openai"
    assert cfg["emotion"]["runs"] == 5
    assert cfg["asr"]["model"] == "tiny"
    assert cfg["vad"]["padding_s"] == 1.0
    # The file itself is untouched by --set.
    assert Project.open(p.root).config["emotion"]["runs"] == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("emotion.backend", "expected section.key=value"),
        ("emotion.nope=1", "unknown setting emotion.nope"),
        ("emotion.runs=many", "should be a int"),
        ("emotion.backend=claude", "choose one of gemini, openai, baseline"),
        ("vad.aggressiveness=7", "choose one of 0, 1, 2, 3"),
    ],
)
def test_bad_override_names_the_setting(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, [override])


def test_broken_file_is_one_clear_error(tmp_path):
    p = Project.create(tmp_path / "p")
    (p.root / "mikupal.toml").write_text("[asr\nmodel = ")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        Project.open(p.root)


def test_open_non_project_and_double_init(tmp_path):
    with pytest.raises(ProjectError, match="mikupal init"):
        Project.open(tmp_path)
    Project.create(tmp_path / "p")
    with pytest.raises(ProjectError, match="already a MIKU-PAL project"):
        Project.create(tmp_path / "p")


def test_init_name_with_quotes_and_backslashes_is_valid_toml(tmp_path):
    # The name is user text: quotes, backslashes and non-ASCII must round-trip (tomli-w writes it).
    name = 'Say "hi" \\ to Ñandú'
    p = Project.create(tmp_path / "p", name=name)
    assert tomllib.loads((p.root / "mikupal.toml").read_text(encoding="utf-8"))["project"]["name"] == name
    assert Project.open(p.root).config["project"]["name"] == name
