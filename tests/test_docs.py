"""The documentation builds and stays true to the repository.

- `mkdocs build --strict` of the site (`mkdocs.yml`, `docs/`, the README's marked sections) passes
  with no warning: mkdocs.yml turns every broken link, broken anchor and page missing from `nav`
  into a warning, and strict mode into a failure. A copy of the docs with such faults shows that the
  build does fail on them.
- Every relative link of README.md points to an existing file (and heading), and the README's
  documentation table lists every page of the site.
- Every command-line script and module the docs name (`python run_*.py`, `python benchmarks/*.py`,
  `torchrun ... x.py`, `python -m <module>`, `uvicorn <module>:<app>`) exists.
- The README's module map has one row per module of `core/` and `server/`, and each module imports
  only the project modules its row names (the import graph is tests/test_structure.py's).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from tests.test_structure import import_graph, project_modules

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PROJECT_PACKAGES = ("core", "server", "benchmarks", "tests")

INLINE_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SCRIPT = re.compile(r"\b(?:python3?|torchrun)\s[^\n`|]*?((?:[\w-]+/)*[\w-]+\.py)\b")
MODULE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
ASGI_APP = re.compile(r"\buvicorn\s+([A-Za-z_][\w.]*):([A-Za-z_]\w*)")


def build_site(root: Path, site_dir: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the project at `root` (snippet paths are relative to it)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its end of life
    # (never --quiet: it hides the warnings from the counter that strict mode fails on, and the build passes)
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(root / "mkdocs.yml"), "--site-dir", str(site_dir)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def nav_pages() -> list[str]:
    """The pages of mkdocs.yml's nav, as paths relative to docs/."""
    pages: list[str] = []

    def walk(entry) -> None:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, list):
            for item in entry:
                walk(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                walk(value)

    walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    return pages


def heading_anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as mkdocs' toc extension (and GitHub, for plain headings) makes them."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {slugify(re.sub(r"[`*]", "", m.group(1)).strip(), "-")
            for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def broken_relative_links(page: Path) -> list[str]:
    """The relative links of `page` whose file, or whose heading in a Markdown file, does not exist."""
    broken = []
    for target in INLINE_LINK.findall(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file})")
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def named_commands(text: str) -> tuple[set[str], set[str], set[tuple[str, str]]]:
    """(scripts, modules, ASGI apps) that command lines in `text` name: `python x.py` / `torchrun ... x.py`,
    `python -m module`, `uvicorn module:app`."""
    scripts = {path for path in SCRIPT.findall(text) if not path.startswith("exp/")}  # exp/: the user's copies
    return scripts, set(MODULE.findall(text)), set(ASGI_APP.findall(text))


def missing_commands(text: str) -> list[str]:
    scripts, modules, apps = named_commands(text)
    missing = [f"script {s}" for s in sorted(scripts) if not (ROOT / s).is_file()]
    for module in sorted(modules):
        if module.split(".")[0] in PROJECT_PACKAGES:
            path = ROOT / module.replace(".", "/")
            if not (path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()):
                missing.append(f"module {module} (python -m needs {path}.py or {path}/__main__.py)")
        elif importlib.util.find_spec(module.split(".")[0]) is None:  # only the top level: no heavy import
            missing.append(f"module {module} (not installed)")
    for module, app in sorted(apps):
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file() or not re.search(rf"^{app}\s*[:=]", path.read_text(), flags=re.M):
            missing.append(f"ASGI app {module}:{app}")
    return missing


def module_map(readme: str) -> dict[str, set[str]]:
    """{module: the project modules it may import}, read from the README's module-map table."""
    rows: dict[str, set[str]] = {}
    for line in readme.split("## Module map", 1)[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) != 3:
            continue
        parts = Path(cells[0].strip("`")).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = parts[0]
        rows[module] = {name if name.split(".")[0] in ("core", "server") else f"{package}.{name}"
                        for name in re.findall(r"`([\w.]+)`", cells[2])}
    return rows


def module_map_disagreements(readme: str) -> list[str]:
    """What the README's module map gets wrong about the code: missing or stale rows, and imports it
    does not allow (naming a package allows its modules too)."""
    modules = project_modules()
    rows = module_map(readme)
    wrong = [f"{m}: no row in the module map" for m in sorted(set(modules) - set(rows))]
    wrong += [f"{m}: a row, but no such module" for m in sorted(set(rows) - set(modules))]
    graph = import_graph(modules)
    for module in sorted(set(rows) & set(modules)):
        for target in sorted(graph[module]):
            if not any(target == name or target.startswith(name + ".") for name in rows[module]):
                wrong.append(f"{module} imports {target}, which its row does not name")
    return wrong


def test_site_builds_strictly_without_warnings(tmp_path):
    done = build_site(ROOT, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in output and "ERROR" not in output, output[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    # the home page is the README's overview and module map
    home = (tmp_path / "site" / "index.html").read_text()
    assert "What a run produces" in home and "Module map" in home


def test_strict_build_fails_on_a_broken_link_anchor_or_unlisted_page(tmp_path):
    """The check itself: faults put into a copy of the docs fail the build, each named in the output."""
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    page = copy / "docs" / "training.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md) and [the API](api.md#no-such-heading).\n")
    (copy / "docs" / "unlisted-page.md").write_text("# Not in the nav\n")
    done = build_site(copy, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    assert "Aborted with 3 warnings in strict mode" in output, output[-4000:]
    for fault in ("no-such-page.md", "#no-such-heading", "unlisted-page.md"):
        assert fault in output, f"{fault} not reported:\n{output[-4000:]}"


def test_readme_links_point_to_existing_files():
    assert INLINE_LINK.findall(README.read_text()), "the README links no page: has the link pattern broken?"
    assert broken_relative_links(README) == []


def test_readme_lists_every_page_of_the_site():
    linked = {target.partition("#")[0] for target in INLINE_LINK.findall(README.read_text())}
    pages = nav_pages()
    assert "index.md" in pages and len(pages) >= 10
    unlisted = [page for page in pages if page != "index.md" and f"docs/{page}" not in linked]
    assert unlisted == [], f"add these pages to the README's documentation table: {unlisted}"


def test_link_check_reports_missing_files_and_headings(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `GPU` path\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#the-gpu-path) [gone](docs/b.md) [bad anchor](docs/a.md#nope) [web](https://x.org)\n")
    assert broken_relative_links(page) == [f"docs/b.md (no file {tmp_path / 'docs' / 'b.md'})",
                                           "docs/a.md#nope (no heading #nope in a.md)"]


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_named_scripts_and_modules_exist(page):
    assert missing_commands(page.read_text()) == []


def test_the_docs_name_the_entry_points():
    """The patterns find what the docs name (so a pattern that matches nothing cannot pass silently)."""
    scripts, modules, apps = set(), set(), set()
    for page in doc_files():
        found = named_commands(page.read_text())
        scripts |= found[0]
        modules |= found[1]
        apps |= found[2]
    assert {"run_train_example.py", "run_analyze_example.py", "run_cache_example.py",
            "benchmarks/gpu_check.py", "tests/data/make_foreign_fixtures.py"} <= scripts
    assert {"server", "server.openapi", "core.formats", "pytest"} <= modules
    assert ("server.app", "app") in apps


def test_command_check_reports_what_does_not_exist():
    text = ("```bash\ntorchrun --standalone --nproc-per-node 2 run_no_such_example.py smollm2\n"
            "python benchmarks/gpu_check.py --quick\npython -m core.no_such_module\n"
            "python -m no_such_package_anywhere\nuvicorn server.app:no_such_app --port 1\n"
            "python exp/my_copy.py\n```\n")
    assert missing_commands(text) == [
        "script run_no_such_example.py",
        "module core.no_such_module (python -m needs "
        f"{ROOT / 'core' / 'no_such_module'}.py or {ROOT / 'core' / 'no_such_module'}/__main__.py)",
        "module no_such_package_anywhere (not installed)",
        "ASGI app server.app:no_such_app"]


def test_module_map_matches_the_code():
    assert module_map_disagreements(README.read_text()) == []


def test_module_map_check_reports_what_the_table_gets_wrong():
    """The check itself, on an edited copy of the README: an import left out of a row, a module
    without a row, and a row for a module that does not exist."""
    readme = README.read_text()
    rows = module_map(readme)
    assert len(rows) > 30 and rows["core.evals"] >= {"core.lm", "core.store"}
    edited = readme.replace("| `hooks`, `lm`, `sae`, `store` |", "| `hooks`, `lm`, `sae` |", 1)  # core/evals.py's row
    assert edited != readme
    edited = re.sub(r"^\| `core/steering.py` .*\n", "", edited, flags=re.M)
    edited = edited.replace("| `core/cli.py` |", "| `core/no_such_module.py` | nothing | — |\n| `core/cli.py` |", 1)
    assert module_map_disagreements(edited) == ["core.steering: no row in the module map",
                                                "core.no_such_module: a row, but no such module",
                                                "core.evals imports core.store, which its row does not name"]
