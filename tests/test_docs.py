"""The documentation: a short README, and every relative link in it and in docs/ reaching a file that
exists and, for an anchor, a heading of that file (GitHub's anchor rule)."""

import re
from pathlib import Path

import pytest
from helpers import REPO

MAX_README_LINES = 250
# The README, docs/ and the guides that link into docs/.
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *(REPO / folder / "README.md" for folder in ("poc", "bench", "site_configs")),
]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped except '-' and '_', spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_readme_is_at_most_250_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines"


def test_the_anchor_rule():
    assert anchor("The data path: resize or spacing, 2.5D") == "the-data-path-resize-or-spacing-25d"
    assert anchor("Site-enforced privacy (`poc/privacy.json`)") == "site-enforced-privacy-pocprivacyjson"
    assert anchor("Record-level DP-SGD (`dp_sgd`): x") == "record-level-dp-sgd-dp_sgd-x"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_heading(page):
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"
