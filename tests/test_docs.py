"""The docs a newcomer reads: the README stays a short front door, every relative link in the
README and docs/ leads to a file (and heading) that exists, and every study page keeps the
markers its `--doc` writer rewrites."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README] + sorted((REPO / "docs").rglob("*.md"))
MAX_README_LINES = 250
# Study page -> the marker name its writer uses (<!-- NAME:begin --> ... <!-- NAME:end -->).
STUDY_MARKERS = {"reproduce.md": "reproduce", "masks.md": "masks", "distiller.md": "distiller",
                 "compression.md": "compress", "autotinybert.md": "autotinybert",
                 "obs.md": "obs", "structured.md": "structured"}

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a link is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: pathlib.Path) -> set:
    headings = re.finditer(r"^#{1,6}\s+(.*)$", _FENCE.sub("", page.read_text()), re.M)
    return {_slug(m.group(1)) for m in headings}


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_every_study_page_has_its_markers():
    studies = REPO / "docs" / "studies"
    assert sorted(p.name for p in studies.glob("*.md")) == sorted(STUDY_MARKERS)
    for page, name in STUDY_MARKERS.items():
        text = (studies / page).read_text()
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        assert text.count(begin) == 1 and text.count(end) == 1, f"{page}: {begin} ... {end}"
        assert text.index(begin) < text.index(end), f"{page}: {end} before {begin}"
