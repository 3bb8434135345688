"""mkdocs hooks: build only the pages whose subject has landed, and document every public name.

- A page may declare in its front matter ``requires: [name, ...]``: the public names of
  ``topkloss`` it documents. If one of them is not in ``topkloss.__all__`` yet, the page is
  left out of the build and of the navigation (a page about a function that does not exist
  would break ``mkdocs build --strict`` with unresolved references).
- Pages listed in :data:`OPTIONAL_PAGES` (written by other parts of the project) are left
  out of the navigation while their file does not exist.
- A line of any page may end with ``<!-- requires: name, ... -->`` (public names) or
  ``<!-- requires-page: page.md, ... -->``: the line is dropped while one of them is missing,
  and the marker is removed otherwise. A marker alone on its line opens a block that ends at
  a line ``<!-- /requires -->``: the whole block is kept or dropped.
- The API reference page (``api.md``) documents every name of ``topkloss.__all__``: a
  public name that the page does not list explicitly is appended to it, so that a new
  function is never missing from the reference.

:func:`pending_pages` is what the tests use to know which pages the site should hold.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml

log = logging.getLogger("mkdocs.hooks.topkloss")

OPTIONAL_PAGES = {"demo.md", "scale.md"}
API_PAGE = "api.md"
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_LINE_MARKER = re.compile(r"\s*<!--\s*requires(-page)?:\s*([^>]*?)\s*-->\s*$")


def public_names() -> list[str]:
    import topkloss

    return list(topkloss.__all__)


def required_names(path: Path) -> list[str]:
    """The ``requires`` list of a page's front matter (empty if none)."""
    match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    if not match:
        return []
    meta = yaml.safe_load(match.group(1)) or {}
    return list(meta.get("requires", []))


def pending_pages(docs_dir: Path, nav_files: list[str], names: list[str] | None = None) -> dict[str, str]:
    """``{page: reason}`` for every page of the navigation that is left out of this build."""
    names = public_names() if names is None else names
    pending = {}
    for page in nav_files:
        path = docs_dir / page
        if not path.exists():
            if page in OPTIONAL_PAGES:
                pending[page] = "not written yet"
            continue  # any other missing page is a real error: mkdocs reports it
        missing = [n for n in required_names(path) if n not in names]
        if missing:
            pending[page] = "waits for topkloss." + ", topkloss.".join(missing)
    for path in sorted(docs_dir.rglob("*.md")):
        page = path.relative_to(docs_dir).as_posix()
        if page not in pending and page not in nav_files:
            missing = [n for n in required_names(path) if n not in names]
            if missing:
                pending[page] = "waits for topkloss." + ", topkloss.".join(missing)
    return pending


def nav_files(nav) -> list[str]:
    """Every Markdown file named in a mkdocs ``nav`` configuration, in order."""
    out = []
    for item in nav or []:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            out += nav_files(value)
        elif isinstance(value, str) and value.endswith(".md"):
            out.append(value)
    return out


def _prune(nav, drop: set[str]):
    out = []
    for item in nav:
        if isinstance(item, dict):
            title, value = next(iter(item.items()))
            if isinstance(value, list):
                value = _prune(value, drop)
                if value:
                    out.append({title: value})
            elif value not in drop:
                out.append(item)
        elif item not in drop:
            out.append(item)
    return out


_PENDING: dict[str, str] = {}


def on_config(config, **kwargs):
    _PENDING.clear()
    _PENDING.update(pending_pages(Path(config["docs_dir"]), nav_files(config["nav"])))
    for page, reason in _PENDING.items():
        log.info("leaving %s out of the site: %s", page, reason)
    config["nav"] = _prune(config["nav"], set(_PENDING))
    return config


def on_files(files, config, **kwargs):
    for page in _PENDING:
        file = files.get_file_from_path(page)
        if file is not None:
            files.remove(file)
    return files


def conditional_lines(markdown: str, names: list[str], pages: set[str]) -> str:
    """Drop the lines whose ``requires`` marker is not met; strip the markers of the others."""
    out = []
    dropping = None  # inside a block: whether it is dropped
    for line in markdown.split("\n"):
        if dropping is not None and line.strip() == "<!-- /requires -->":
            dropping = None
            continue
        match = _LINE_MARKER.search(line)
        if match is None:
            if not dropping:
                out.append(line)
            continue
        wanted = [w.strip() for w in match.group(2).split(",") if w.strip()]
        have = pages if match.group(1) else names
        met = all(w in have for w in wanted)
        if not line[: match.start()].strip():  # a marker alone: a block
            dropping = not met
        elif met and not dropping:
            out.append(line[: match.start()])
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files, **kwargs):
    built = {f.src_uri for f in files.documentation_pages()}
    markdown = conditional_lines(markdown, public_names(), built)
    if page.file.src_uri != API_PAGE:
        return markdown
    listed = set(re.findall(r"^::: topkloss\.(\w+)\s*$", markdown, re.M))
    extra = [n for n in public_names() if n not in listed]
    if extra:
        log.info("API page: appending %s", ", ".join(extra))
        markdown += "\n\n## Other public names\n\n" + "\n\n".join(f"::: topkloss.{n}" for n in extra) + "\n"
    return markdown
