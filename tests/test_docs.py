"""The docs in the repository (docs/, mkdocs.yml, README.md, ARCHITECTURE.md) stay buildable and true.

* the MkDocs site builds with `mkdocs build --strict` (every page in the navigation, no broken link or anchor:
  mkdocs.yml's `validation` turns each into a warning, --strict into an error);
* README.md is a front door: at most 160 lines, every relative link pointing to a file that exists;
* ARCHITECTURE.md is a short pointer to docs/architecture.md (the one architecture text);
* docs/cli.md holds every command's `--help` exactly as the CLI prints it;
* every repository path the docs cite exists;
* docs/architecture.md names every module of the code (na_deploy/, hw_targets/, cli/, models/) by its path;
* docs/contract.md's table lists, per clause C1-C8, exactly the test files that name the clause;
* no tracked text file cites the team's design page: the repository's contract is docs/contract.md.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PATH_ROOTS = ("na_deploy", "hw_targets", "cli", "models", "tests", "benchmarks", "scripts", "examples", "patches",
              "docs")
REPO_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*)" % "|".join(PATH_ROOTS))
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HELP_WIDTH = 78  # what click prints when stdout is not a terminal (80 columns - 2)


def doc_files() -> list[Path]:
    """The markdown the project writes about itself."""
    return [REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / "examples" / "ci" / "README.md",
            *sorted(DOCS.glob("*.md"))]


def test_site_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "contract" / "index.html").is_file()


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; allowed: at most 160 (move detail to docs/)"


def test_readme_links_point_to_files():
    text = (REPO / "README.md").read_text()
    links = [t for t in MD_LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert links, "README.md links to no docs page"
    missing = [t for t in links if not (REPO / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_architecture_md_points_to_the_docs_page():
    text = (REPO / "ARCHITECTURE.md").read_text()
    assert "(docs/architecture.md)" in text
    assert len(text.splitlines()) <= 15, "ARCHITECTURE.md is a pointer; the architecture text is docs/architecture.md"
    assert "## " in (DOCS / "architecture.md").read_text()


def _help(cli, args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, prog_name="na-deploy", terminal_width=HELP_WIDTH)
    assert result.exit_code == 0, result.output
    return result.output.rstrip("\n")


def test_cli_reference_holds_every_commands_help():
    from na_deploy.cli.main import cli

    page = (DOCS / "cli.md").read_text()
    commands = cli.list_commands(click.Context(cli))
    assert len(commands) >= 10
    for args in [[]] + [[c] for c in commands]:
        block = f"```text\n{_help(cli, args + ['--help'])}\n```"
        name = " ".join(["na-deploy", *args])
        assert block in page, (f"docs/cli.md: the `{name} --help` block differs from the CLI's output; "
                               "run `.venv/bin/python scripts/cli_docs.py`")


def test_cited_repository_paths_exist():
    missing = []
    for doc in doc_files():
        for no, line in enumerate(doc.read_text().splitlines(), 1):
            for path in REPO_PATH.findall(line):
                path = path.rstrip(".")
                if "<" not in path and not (REPO / path).exists():
                    missing.append(f"{doc.relative_to(REPO)}:{no}: {path}")
    assert not missing, "docs cite paths that do not exist:\n" + "\n".join(missing)


CODE_ROOTS = ("na_deploy", "hw_targets", "cli", "models")


def test_architecture_names_every_module_and_only_real_paths():
    """The map cannot go stale: a new module must get its line in docs/architecture.md, a moved one its new path."""
    text = (DOCS / "architecture.md").read_text()
    cited = {path.rstrip(".") for path in REPO_PATH.findall(text)}
    modules = sorted(str(p.relative_to(REPO)) for root in CODE_ROOTS for p in (REPO / root).rglob("*.py")
                     if p.name != "__init__.py" and "__pycache__" not in p.parts)
    assert len(modules) > 50
    unnamed = [m for m in modules if m not in cited]
    assert not unnamed, "docs/architecture.md does not name these modules (add one line each): " + ", ".join(unnamed)
    missing = sorted(path for path in cited if "<" not in path and not (REPO / path).exists())
    assert not missing, "docs/architecture.md names paths that do not exist: " + ", ".join(missing)


def _clause_table() -> dict[str, set[str]]:
    """docs/contract.md "Where each clause lives": clause -> the test files of its last column."""
    rows = {}
    for line in (DOCS / "contract.md").read_text().splitlines():
        m = re.match(r"\| (C[1-8]) .*\|([^|]*)\|\s*$", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`(tests/[\w/]+\.py)`", m.group(2)))
    return rows


def test_contract_table_lists_the_tests_that_name_each_clause():
    table = _clause_table()
    assert sorted(table) == [f"C{i}" for i in range(1, 9)]
    tests = {f"tests/{p.name}": p.read_text() for p in sorted((REPO / "tests").glob("test_*.py"))}
    for clause, listed in table.items():
        naming = {name for name, text in tests.items() if re.search(rf"\b{clause}\b", text)}
        naming.discard("tests/test_docs.py")
        assert listed == naming, (f"docs/contract.md, row {clause}: listed but not naming it: "
                                  f"{sorted(listed - naming)}; naming it but not listed: {sorted(naming - listed)}")


def test_no_tracked_file_cites_the_design_page():
    design = "DESIGN" + ".md"  # spelled in two pieces so that this file does not cite it itself
    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True,
                               timeout=60).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = (".py", ".md", ".tmpl", ".yml", ".toml", ".sh")
    hits = []
    for name in files:
        path = REPO / name
        if name.endswith(suffixes) and path.is_file():
            for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if design in line:
                    hits.append(f"{name}:{no}")
    assert not hits, f"cite docs/contract.md instead of {design}: " + ", ".join(hits)
