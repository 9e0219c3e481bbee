"""docs/bad_inputs.md lists every bad input the test suite tries: its count is right, every test it
names exists, and every test that expects one of the project's error messages has a row."""

import ast
import re
from pathlib import Path

import pytest

from sae_lib.constants import REPO_ROOT

DOC = REPO_ROOT / "docs" / "bad_inputs.md"
TESTS = REPO_ROOT / "tests"
# A test tries a bad input when it expects one of the project's messages, an error box, or a fallback.
_EXPECTS_A_MESSAGE = re.compile(
    r"pytest\.raises\((InputError|ModelLoadError|SAELoadError|CompatibilityError|GenerationError|LatentLabError)"
    r"|(?<!not )at\.error|stAlertContentError|fallback_reason(?! is None)"
)
_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def rows() -> list[tuple[int, str]]:
    return [(int(m.group(1)), line) for line in DOC.read_text().splitlines() if (m := re.match(r"\| (\d+) \|", line))]


def _test_functions(path: Path) -> dict[str, str]:
    """name -> source of each top-level test function in ``path``."""
    src = path.read_text()
    return {
        node.name: ast.get_source_segment(src, node) or ""
        for node in ast.parse(src).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_the_count_matches_the_rows():
    numbers = [n for n, _ in rows()]
    assert numbers == list(range(1, len(numbers) + 1)), "rows must be numbered 1, 2, 3, ... in order"
    (stated,) = re.findall(r"\*\*(\d+) rows\*\*", DOC.read_text())
    assert int(stated) == len(numbers)


@pytest.mark.slow  # reads every test file
def test_every_named_test_exists():
    for _, line in rows():
        refs = _REF.findall(line)
        assert refs, f"a row without a test: {line[:80]}"
        for path, name in refs:
            assert name in _test_functions(REPO_ROOT / path), f"{path}::{name} is named in docs/bad_inputs.md but does not exist"


def test_every_test_that_expects_a_message_has_a_row():
    named = {(path, name) for _, line in rows() for path, name in _REF.findall(line)}
    missing = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        for name, src in _test_functions(path).items():
            if _EXPECTS_A_MESSAGE.search(src) and (rel, name) not in named:
                missing.append(f"{rel}::{name}")
    assert not missing, "bad inputs tried by these tests are missing from docs/bad_inputs.md: " + ", ".join(missing)
