"""Skips: only for what the README names as optional, and `make test` lists them by reason.

Two checks: the suite's source holds no importorskip and no skip reason outside
skip_policy.ALLOWED_SKIPS (caught before anything runs), and the hooks themselves turn a
disallowed skip into a failure and print the "skipped, by reason" block (run on small files).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import skip_policy

TESTS = Path(__file__).resolve().parent


def _skip_calls(tree: ast.AST):
    """(line, kind, reason or None) for every pytest.skip / importorskip / mark.skip(if) call."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name not in ("skip", "importorskip", "skipif"):
            continue
        reason = None
        for kw in node.keywords:
            if kw.arg in ("reason", "msg"):
                reason = kw.value
        if reason is None and name == "skip" and node.args:
            reason = node.args[0]
        text = None
        if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
            text = reason.value
        elif isinstance(reason, ast.JoinedStr):  # f-string: its literal head is what the policy matches
            text = "".join(v.value for v in reason.values if isinstance(v, ast.Constant))
        yield node.lineno, name, text


def _violations() -> list[str]:
    out = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("skip_policy.py", "test_skips_policy.py"):
            continue
        for line, kind, reason in _skip_calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{line}"
            if kind == "importorskip":
                out.append(f"{where}: importorskip (a module make test installs must import)")
            elif reason is None:
                out.append(f"{where}: {kind} without a literal reason")
            elif not skip_policy.allowed(reason):
                out.append(f"{where}: {kind} reason not allowed: {reason!r}")
    return out


def test_the_suite_skips_only_for_optional_things():
    assert _violations() == []


def test_the_source_check_catches_importorskip_and_other_reasons(tmp_path):
    src = ('import pytest\n'
           'review = pytest.importorskip("mikupal_gui.review", reason="not in this build")\n'
           'def test_a():\n    pytest.skip("ray is not installed")\n'
           'def test_b(d):\n    pytest.skip(f"real weights not found at {d}")\n')
    found = list(_skip_calls(ast.parse(src)))
    assert [(k, r) for _, k, r in found] == [("importorskip", "not in this build"), ("skip", "ray is not installed"),
                                             ("skip", "real weights not found at ")]
    assert [skip_policy.allowed(r) for _, _, r in found] == [False, False, True]


def test_a_disallowed_skip_fails_and_the_summary_groups_skips_by_reason(pytester):
    pytester.makepyfile(test_some="""
        import pytest

        def test_weights():
            pytest.skip("real weights not found at /nowhere (set MIKUPAL_TEST_MODELS)")

        @pytest.mark.parametrize("i", range(3))
        def test_vlc(i):
            pytest.skip("libVLC is not installed (apt install vlc)")

        def test_product_module():
            pytest.importorskip("mikupal_gui.no_such_module", reason="not in this build")

        def test_runs():
            assert True
    """)
    res = pytester.runpytest("-p", "skip_policy")
    res.assert_outcomes(passed=1, skipped=4, failed=1)
    out = res.stdout.str()
    assert "skip not allowed: 'not in this build'" in out
    block = out[out.index("skipped, by reason"):]
    lines = [ln.strip() for ln in block.splitlines()[1:5]]
    assert lines[0] == "3  libVLC is not installed (apt install vlc)"
    assert lines[1].startswith("test_some.py::test_vlc[0], test_some.py::test_vlc[1]")
    assert lines[2] == "1  real weights not found at /nowhere (set MIKUPAL_TEST_MODELS)"


def test_a_module_level_importorskip_of_an_installed_dependency_fails_collection(pytester):
    pytester.makepyfile(test_mod="""
        import pytest
        ray = pytest.importorskip("no_such_dependency_here", reason="Ray is not installed")

        def test_x():
            pass
    """)
    res = pytester.runpytest("-p", "skip_policy")
    assert res.ret != 0
    assert "skip not allowed: 'Ray is not installed'" in res.stdout.str()


@pytest.mark.parametrize("reason,ok", [
    ("real weights not found at /x (set MIKUPAL_TEST_MODELS to the shared models folder)", True),
    ("libVLC is not installed (apt install vlc)", True),
    ("only Linux runs without a display server", True),
    ("stale-folder cleanup needs a POSIX process probe", True),
    ("krippendorff is in the dev extra", False),
    ("the review workspace is not in this build", False),
    ("ffmpeg CLI not installed", False),
    ("PyInstaller is not installed (it comes with the dev extra)", False),
])
def test_allowed_reasons(reason, ok):
    assert skip_policy.allowed(reason) is ok
