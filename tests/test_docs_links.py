"""Links between the project's Markdown files point at files and headings that exist.

Anchors follow GitHub's rule for heading ids: lower case, every character dropped that is not
a letter, digit, mark, underscore, hyphen or space, then each space a hyphen (so "Choosing λ:
`--lam auto`" is ``#choosing-λ---lam-auto``); repeated headings get ``-1``, ``-2`` …
"""

from __future__ import annotations

import pathlib
import re
import unicodedata

ROOT = pathlib.Path(__file__).parents[1]
FILES = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")


def slug(heading: str) -> str:
    """GitHub's id of a heading's text."""
    kept = (
        ch for ch in heading.strip().lower() if ch in " -_" or unicodedata.category(ch)[0] in "LNM"
    )
    return "".join(kept).replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def test_slug_follows_github():
    assert slug("Choosing λ: `--lam auto`") == "choosing-λ---lam-auto"
    assert slug("The default DIP against the best CS image (issue 20)") == (
        "the-default-dip-against-the-best-cs-image-issue-20"
    )
    assert slug("At 96² × 16 frames") == "at-96²--16-frames"


def test_links_between_the_docs_resolve():
    broken = []
    for f in FILES:
        for m in LINK.finditer(f.read_text(encoding="utf-8")):
            target, anchor = m.group(1), m.group(2)
            if re.match(r"^[a-z]+:", target):  # http(s), mailto
                continue
            path = (f.parent / target).resolve() if target else f
            if not path.exists():
                broken.append(f"{f.relative_to(ROOT)}: {target} does not exist")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{f.relative_to(ROOT)}: {target}#{anchor} names no heading")
    assert not broken, "\n".join(broken)
