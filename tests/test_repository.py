"""Facts about the repository itself that a reviewer would otherwise have to remember."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_citation_leaves_the_repository() -> None:
    """Code, data, docs and benches cite docs/evidence.md, never ../shared (a clone does not have it)."""
    files = [p for folder in ("fitplan", "docs", "bench") for p in (ROOT / folder).rglob("*") if p.is_file()
             and p.suffix in (".py", ".toml", ".md")] + [ROOT / "pyproject.toml", ROOT / "README.md"]
    citing = [str(p.relative_to(ROOT)) for p in files if "../shared" in p.read_text(encoding="utf-8")]
    assert citing == []
