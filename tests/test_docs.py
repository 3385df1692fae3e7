"""The README and docs/: every relative link leads to a file that exists and every `#anchor` to a heading
of its page (GitHub's anchors: the heading in lower case, punctuation other than - and _ dropped, spaces
as -, a repeated heading getting -1, -2, ...); the README stays a page read in two minutes; its code map
names every top-level file and folder git tracks and every Python module of utils/ and bench/."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

README = Path(REPO, "README.md")
PAGES = [README, *sorted(Path(REPO, "docs").glob("*.md"))]
MAX_LINES, MAX_BYTES = 260, 16384
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings, a repeated one numbered as GitHub numbers it."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` whose file is missing, or whose anchor is not a heading of its page."""
    broken = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if target.startswith(EXTERNAL):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target} (no such file)")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked.read_text(encoding="utf-8"))):
                broken.append(f"{target} (no such heading)")
    return broken


def code_map() -> set[str]:
    """The names (code spans) of the README's code map."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    return {span.strip("`") for span in CODE_SPAN.findall(section)}


def tracked() -> list[str]:
    listing = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return listing.stdout.splitlines()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_anchors_follow_githubs_rules():
    text = ("## Runs never touch each other's files\n## Output files (in `--results_dir`, default `results/train`)\n"
            "## Single modulus: `prng_train_lowmem.py`\n```\n# a comment, not a heading\n```\n## Tests\n### Tests\n")
    assert anchors(text) == {"runs-never-touch-each-others-files", "output-files-in---results_dir-default-resultstrain",
                             "single-modulus-prng_train_lowmempy", "tests", "tests-1"}


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n## Part two\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[fine](other.md#part-two) [here](#page) [web](https://example.org/#x)\n"
                    "[gone](missing.md) [no part](other.md#part-three) [no heading](#nowhere)\n"
                    "`[in code](missing.md)`\n```\n[in a block](missing.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#part-three (no such heading)",
                                  "#nowhere (no such heading)"]


def test_the_readme_is_read_in_two_minutes():
    data = README.read_bytes()
    assert data.count(b"\n") <= MAX_LINES and len(data) <= MAX_BYTES, (data.count(b"\n"), len(data))


def test_the_code_map_names_every_tracked_top_level_entry_and_module():
    files = tracked()
    top = {path.split("/")[0] + ("/" if "/" in path else "") for path in files}
    modules = {path for path in files if path.endswith(".py") and path.split("/")[0] in ("utils", "bench")}
    assert top and modules
    assert sorted((top | modules) - code_map()) == []
