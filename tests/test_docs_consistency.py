"""The README agrees with the code and with itself: one compatibility date (wrangler.toml's),
one D1 database name, cited documents that exist, benchmark figures the bench printed (its own
and those of docs/performance-rounds.md), and CLI commands the CLI accepts."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from workkit_workflow.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
WRANGLER = tomllib.loads((ROOT / "wrangler.toml").read_text())


def test_one_compatibility_date_across_wrangler_toml_and_the_readme() -> None:
    dates = set(re.findall(r'compatibility_date = "([\d-]+)"', README))
    assert dates == {WRANGLER["compatibility_date"]}


def test_one_d1_database_name() -> None:
    toml_text = (ROOT / "wrangler.toml").read_text()
    names = set(re.findall(r'database_name = "([\w-]+)"', README + toml_text))
    created = set(re.findall(r"d1 create ([\w-]+)", README + toml_text))
    assert len(names) == 1 and created <= names, (names, created)


def test_every_cited_document_exists() -> None:
    cited = set(re.findall(r"\((docs/[\w./-]+)\)", README)) | set(re.findall(r"`(docs/[\w./-]+)`", README))
    assert "docs/benchmarks.md" in cited
    for path in cited:
        assert (ROOT / path).is_file(), path


PRINTED = (ROOT / "docs" / "benchmarks.md").read_text()
"""What the bench printed, run by run."""


def _figures(text: str) -> set[str]:
    """The figures of ``text`` as the bench prints them (two or three decimals)."""
    return set(re.findall(r"\b\d+\.\d{2,3}\b", text))


def test_the_readme_benchmark_figures_are_ones_the_bench_printed() -> None:
    results = README[README.index("### Results") : README.index("### Where the time goes")]
    figures = _figures(results)
    assert len(figures) > 20
    assert not sorted(f for f in figures if f not in PRINTED)
    assert "2026-11-30" in results and "2026-11-30" in PRINTED


def test_the_rounds_figures_are_ones_the_bench_printed() -> None:
    # The rounds as the README told them until 2026-12-02 (docs/performance-rounds.md): the
    # part that was the README's "Results", held to the same rule.
    text = (ROOT / "docs" / "performance-rounds.md").read_text()
    figures = _figures(
        text[text.index("The rounds, in order.") : text.index("## Objects per execution in flight")]
    )
    assert len(figures) > 100
    assert not sorted(f for f in figures if f not in PRINTED)


def test_the_readme_cli_commands_parse() -> None:
    commands = re.findall(r"^\.venv/bin/workkit-workflow ([^#\n]+)", README, re.M)
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        parser.parse_args(shlex.split(command))
