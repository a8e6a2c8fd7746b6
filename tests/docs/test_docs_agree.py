"""The documentation and the code say the same thing.

Where a table on a page can be read off the code (the gin files and their agents, the settings
a resume may change, the bad-input examples), these tests read both and compare; they also
check that every page is in the site's nav and that the README's links into docs/ resolve.
They parse files only: no TensorFlow, no gin.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from tests.conftest import REPO

DOCS = REPO / "docs"
GIN = REPO / "gin"
CODE_SPAN = re.compile(r"`([^`]+)`")


def nav_pages(nav) -> list[str]:
    """Every page file named in an mkdocs nav (nested lists of `title: page` entries)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def mkdocs_config() -> dict:
    # mkdocs.yml may hold `!!python/name:` tags for extensions; none are needed here.
    return yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)


def section(page: Path, heading: str) -> str:
    """The text under `## heading` (any level) up to the next heading of the same or a
    higher level."""
    text = page.read_text()
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.MULTILINE)
    assert match, f"{page.name} has no heading {heading!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, as lists of cell texts."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    assert len(lines) >= 3, "no table found"
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def heading_ids(page: Path) -> set[str]:
    """The anchors mkdocs gives the page's headings (Python-Markdown's toc slugify)."""
    ids = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"#+ (.+?)\s*$", line)):
            ids.add(slugify(match.group(1).replace("`", ""), "-"))
    return ids


# --- the site ---------------------------------------------------------------------------------


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages(mkdocs_config()["nav"])
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav)), "a page is in the nav twice"


def test_the_build_is_strict_and_checks_links_and_anchors():
    config = mkdocs_config()
    assert config.get("strict") is True
    links = config["validation"]["links"]
    assert {links[key] for key in ("not_found", "anchors", "unrecognized_links")} == {"warn"}
    assert config["validation"]["nav"]["omitted_files"] == "warn"


def test_no_page_refers_to_issue_numbers_or_files_outside_the_repository():
    stale = re.compile(r"issue [0-9]+|\.\./shared|farm-bench", flags=re.IGNORECASE)
    for page in [REPO / "README.md", *DOCS.rglob("*.md")]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not stale.search(line), f"{page.relative_to(REPO)}:{number}: {line}"


def test_readme_links_resolve():
    """Relative links in the README (pages, anchors, figures) point at what exists."""
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local), "the README links no docs page"
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path
        assert target.exists(), f"README links {link}: no {path}"
        if anchor:
            assert anchor in heading_ids(target), f"README links {link}: no such heading"


def test_every_benchmark_script_is_on_the_results_page():
    results = (DOCS / "results.md").read_text()
    for script in sorted((REPO / "scripts" / "bench").glob("*.py")):
        assert f"`{script.name}" in results, f"{script.name} is missing from docs/results.md"


# --- gin files and their agents ---------------------------------------------------------------


def gin_bindings(path: Path) -> dict[str, str]:
    """The top-level `name = value` bindings of a gin file, its includes applied first where
    they stand (later bindings override earlier ones, as in gin)."""
    bindings: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if match := re.match(r"include\s+['\"](.+)['\"]$", line):
            bindings.update(gin_bindings(path.parent / match.group(1)))
        elif match := re.match(r"([A-Za-z_][\w.]*)\s*=\s*(\S.*)$", line):
            bindings[match.group(1)] = match.group(2).strip()
    return bindings


def agent_loop_network(path: Path) -> tuple[str, str, str]:
    bindings = gin_bindings(path)
    loop = bindings.get("run_experiment.loop", "@train").lstrip("@")
    network_key = "network" if loop == "train" else "actor_network"
    return bindings[f"{loop}.agent"], loop, bindings[f"{loop}.{network_key}"]


GIN_FILES = sorted(path.name for path in GIN.glob("*.gin"))


def agents_table() -> dict[str, list[str]]:
    rows = table_rows(section(DOCS / "agents.md", "Gin files and their agents"))
    table = {}
    for row in rows:
        names = CODE_SPAN.findall(row[0])
        assert len(names) == 1, f"one gin file per row: {row[0]}"
        table[names[0]] = row
    return table


def test_agents_table_lists_exactly_the_gin_files():
    assert sorted(agents_table()) == GIN_FILES


@pytest.mark.parametrize("name", GIN_FILES)
def test_agents_table_row_matches_the_gin_file(name):
    agent, loop, network = agent_loop_network(GIN / name)
    row = agents_table()[name]
    agent_cell, network_cell, loop_cell = row[1], row[2], row[-1]
    assert agent in CODE_SPAN.findall(agent_cell), f"{name}: train.agent is {agent}"
    assert network in CODE_SPAN.findall(network_cell), f"{name}: the network is {network}"
    assert CODE_SPAN.findall(loop_cell) == [loop], f"{name}: runs in the loop {loop}"


# --- settings a resume may change -------------------------------------------------------------


def resumable_changes() -> tuple[str, ...]:
    """`pipeline/run_settings.py`'s RESUMABLE_CHANGES, loaded without the package (whose
    import prepares TensorFlow's stack)."""
    spec = importlib.util.spec_from_file_location(
        "run_settings_for_docs", REPO / "pipeline" / "run_settings.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module.RESUMABLE_CHANGES


def test_resume_table_lists_exactly_the_resumable_settings():
    rows = table_rows(section(DOCS / "resume.md", "Settings a resume may change"))
    documented = [name for row in rows for name in CODE_SPAN.findall(row[0])]
    assert len(documented) == len(set(documented)), "a setting is listed twice"
    assert sorted(documented) == sorted(resumable_changes())


# --- bad input --------------------------------------------------------------------------------

BAD_INPUT = REPO / "tests" / "cli" / "test_bad_input.py"


def bad_input_cases() -> list:
    """The CASES table of tests/cli/test_bad_input.py, evaluated from its source: the Case
    class, the helpers and constants it uses, without the module's imports (TensorFlow)."""
    tree = ast.parse(BAD_INPUT.read_text())
    wanted: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Case":
            wanted.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name == "b":
            wanted.append(node)
        elif isinstance(node, ast.Assign) and all(
            isinstance(target, ast.Name) and target.id.isupper() for target in node.targets
        ):
            wanted.append(node)
            if any(target.id == "CASES" for target in node.targets):
                break
    code = compile(ast.Module(body=wanted, type_ignores=[]), str(BAD_INPUT), "exec")
    module = types.ModuleType("bad_input_cases_for_docs")
    module.__dict__.update(dataclass=dataclass, field=field, Path=Path)
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    try:
        exec(code, module.__dict__)  # our own test file's table
    finally:
        del sys.modules[module.__name__]
    return module.CASES


def test_every_error_example_is_a_tested_case():
    source = BAD_INPUT.read_text()
    rows = table_rows(section(DOCS / "errors.md", "Categories"))
    examples = [span for row in rows for span in CODE_SPAN.findall(row[1])]
    assert len(examples) >= 20
    for example in examples:
        assert example in source, f"docs/errors.md's example {example} is no case of {BAD_INPUT}"


def test_documented_error_lines_contain_what_the_cases_check():
    cases = bad_input_cases()
    block = section(DOCS / "errors.md", "Examples")
    lines = [line for line in block.splitlines() if line.startswith(("$ ", "error:"))]
    commands = [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]
    assert commands, "docs/errors.md shows no example"
    for command, error in commands:
        assert command.startswith("$ python -m ") and error.startswith("error: "), command
        cli, *args = shlex.split(command[len("$ python -m ") :])
        matching = [case for case in cases if case.cli == cli and case.args == args]
        assert matching, f"docs/errors.md's `{command}` is no case of {BAD_INPUT.name}"
        for fragment in matching[0].fragments:
            assert fragment in error, f"{command}: the error line lacks {fragment!r}"


def test_errors_page_names_every_command_the_cases_cover():
    text = (DOCS / "errors.md").read_text()
    for cli in {case.cli for case in bad_input_cases()}:
        name = "pipeline.distributed.*" if cli.startswith("pipeline.distributed.") else cli
        assert f"`{name}`" in text, f"docs/errors.md does not name {name}"


def test_readme_headline_figures_are_the_results_page_figures():
    """The README's headline table repeats a handful of figures; each must be what the results
    section it links says, so a new measurement on the results page cannot leave the README
    behind."""
    rows = table_rows(section(REPO / "README.md", "Headline results"))
    assert len(rows) >= 4, rows
    for _, result, details in rows:
        link = re.search(r"\]\(docs/results\.md#([^)]+)\)", details)
        assert link, f"headline row {result!r} links no results section"
        target = DOCS / "results.md"
        headings = {
            slugify(match.group(1).replace("`", ""), "-"): match.group(1)
            for match in re.finditer(r"^#+ (.+?)\s*$", target.read_text(), flags=re.MULTILINE)
        }
        assert link.group(1) in headings, f"no results section #{link.group(1)}"
        text = section(target, headings[link.group(1)])
        figures = re.findall(r"\d+(?:\.\d+)?", result)
        assert figures, f"headline row {result!r} has no figure"
        for figure in figures:
            assert re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d]|\.\d)", text), (
                f"README headline {figure} ({result!r}) is not in results.md#{link.group(1)}"
            )


def test_learning_checks_table_is_the_tests_checks():
    """The thresholds on Contributing are those tests/agents/test_learning.py asserts (read
    from its CHECKS by parsing the file: no TensorFlow here)."""
    tree = ast.parse((REPO / "tests" / "agents" / "test_learning.py").read_text())
    checks = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CHECKS"
    )
    expected = {
        call.args[1].value: float(call.args[3].value)
        for call in checks.elts
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Check"
    }
    assert len(expected) == len(checks.elts) >= 8
    rows = table_rows(section(DOCS / "contributing.md", "Tests"))
    documented = {}
    for row in rows:
        gin_file = CODE_SPAN.search(row[1]).group(1)
        documented[gin_file] = float(row[3])
    documented.pop("dqn_cartpole.gin")  # the CLI check, asserted in its own test
    assert documented == expected
