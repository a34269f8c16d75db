"""The README and docs/ hold together: every relative link reaches a file (and its anchor a heading there), the
README stays a five-minute read, and no page points outside the project."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: link to {target} reaches no file"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: {target}: no heading with that anchor"


def test_readme_is_a_short_read() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    headings = [line for line in lines if line.startswith("## ")]
    order = ["## How it works", "## Two commands", "## The estimator in five lines", "## The CLI in five lines",
             "## Algorithms", "## Measured", "## Documentation", "## Layout"]
    assert headings == order


def test_no_page_points_outside_the_project() -> None:
    for page in PAGES:
        assert "shared/" not in page.read_text() and "GUIDE.md" not in page.read_text(), page.name


def test_measured_tables_are_generated_from_the_benchmarks_json() -> None:
    """README's and docs/benchmarks.md's measured tables equal what benchmarks/figures.py makes of
    benchmarks/results/*.json: a figure changes by re-running its benchmark, never by hand."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "figures.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
