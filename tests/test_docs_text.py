"""The markdown docs hold no control characters and no math that lost a backslash.

A docs generator writing "\\(N \\times D\\)" through a Python string without r"" once put a tab where "\\t" was
("\\(N <tab>imes D\\)"); these checks catch that and its cousins (\\a \\b \\f \\n \\r \\v eat the first letter of
\\approx, \\beta, \\frac, \\nabla, \\rho, \\varepsilon).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
CONTROL = re.compile(r"[\t\x07\x08\x0b\x0c\r]")
CODE = re.compile(r"^(```|~~~).*?^\1[ \t]*$|`[^`\n]+`", re.S | re.M)
MATH = re.compile(r"\$\$(.+?)\$\$|\\\((.+?)\\\)|\\\[(.+?)\\\]|(?<![\\$])\$(?!\$)([^$\n]+?)\$", re.S)
# TeX commands whose first letter a Python escape eats, whole (the backslash alone lost) or cut (the escape
# became a control character that was then deleted): \times -> "imes", \frac -> "rac", ...
ESCAPED = ("times", "top", "theta", "tau", "tilde", "beta", "big", "bar", "frac", "forall", "approx", "alpha",
           "varepsilon", "vert", "vec", "rVert", "rangle", "rho", "right", "nabla", "nu", "neq")
COMMAND = re.compile(rf"(?<![\\A-Za-z])({'|'.join(ESCAPED)}|{'|'.join(w[1:] for w in ESCAPED if len(w) > 3)})"
                     r"(?![A-Za-z])")


def _prose(path: Path) -> str:
    """The file's text without fenced code blocks and inline code (where $ and backslashes are literal)."""
    return CODE.sub("", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_control_characters(path):
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        assert not CONTROL.search(line), f"{path.name}:{number} holds a control character: {line!r}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_math_keeps_its_backslashes(path):
    prose = _prose(path)
    for paragraph in re.split(r"\n\s*\n", prose):
        for opening, closing in ("()", "[]"):  # \( \) and \[ \], not a line break's \\[4pt]
            opened, closed = (len(re.findall(rf"(?<!\\)\\\{c}", paragraph)) for c in (opening, closing))
            assert opened == closed, (f"{path.name}: unbalanced \\{opening} \\{closing} (a delimiter lost its "
                                      f"backslash?) in {paragraph!r}")
    for match in MATH.finditer(prose):
        body = next(group for group in match.groups() if group is not None)
        body = re.sub(r"\\(text|mathrm|operatorname)\{[^}]*\}", "", body)  # words inside \text{} are words
        found = COMMAND.search(body)
        assert found is None, f"{path.name}: {found.group()!r} without its backslash in math {body!r}"


def test_the_checks_catch_the_known_breakages(tmp_path):
    broken = tmp_path / "broken.md"
    broken.write_text("a \\(N \times D\\) b\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="control character"):
        test_no_control_characters(broken)
    for text in ("a \\(N imes D\\) b\n", "a \\(N times D\\) b\n", "$$ rac{1}{2} $$\n", "a (N \\times D\\) b\n"):
        broken.write_text(text, encoding="utf-8")
        with pytest.raises(AssertionError, match="backslash"):
            test_math_keeps_its_backslashes(broken)
    broken.write_text("```sh\nfor m in a b; do echo $m; done\n```\n\\(a \\times b\\) and `$x in y$`\n")
    test_math_keeps_its_backslashes(broken)
