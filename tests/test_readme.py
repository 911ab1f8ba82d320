"""The README's reference sections are generated from, or checked against, the code, so a
new setting or column cannot go undocumented."""
from pathlib import Path

from mikupal import config, store

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands():
    head = README.split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head
    assert (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().strip().endswith("make test")


def test_configuration_reference_matches_the_settings():
    start, end = "<!-- config:start -->\n", "<!-- config:end -->"
    section = README[README.index(start) + len(start):README.index(end)]
    assert section == config.markdown_reference(), (
        "README configuration reference is stale: regenerate with python -m mikupal.config --markdown")


def test_every_table_and_column_of_the_schema_is_documented(tmp_path):
    doc = README[README.index("## project.db schema"):README.index("## Export formats")]
    db = store.connect(tmp_path / "project.db")
    missing = []
    for table in db.table_names():
        if f"`{table}`" not in doc:
            missing.append(table)
            continue
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{table}` |"))
        missing += [f"{table}.{c.name}" for c in db[table].columns if f"`{c.name}`" not in row]
    assert not missing, f"undocumented in README 'project.db schema': {missing}"
