"""The documentation site: it builds strictly, holds every page, loads nothing from outside,
documents every public name, and every ``>>>`` example on it runs and prints what it shows.

Also runs the scripts that make the site's figures and tables (into temporary folders, so
the committed files are left alone).
"""

from __future__ import annotations

import doctest
import html.parser
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PYTHON = sys.executable


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load("topkloss_docs_hooks", DOCS / "ext" / "hooks.py")


def _nav():
    import yaml

    class _Loader(yaml.SafeLoader):  # mkdocs.yml may hold !!python/name tags: ignore them
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    return hooks.nav_files(config["nav"])


NAV = _nav()
PENDING = hooks.pending_pages(DOCS, NAV)
BUILT_PAGES = [p for p in NAV if p not in PENDING]


def _html_path(site, page):
    """Where mkdocs (use_directory_urls: false) writes the HTML of a Markdown page."""
    return site / (page[: -len(".md")] + ".html")


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [PYTHON, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_pending_pages_only_wait_for_missing_work():
    """Pages are left out only while the function or the page they document does not exist."""
    for page, reason in PENDING.items():
        assert reason.startswith("waits for topkloss.") or reason == "not written yet", (page, reason)
    assert "index.md" in BUILT_PAGES and "api.md" in BUILT_PAGES


def test_every_page_is_built(site):
    missing = [p for p in BUILT_PAGES if not _html_path(site, p).is_file()]
    assert not missing, f"pages in the nav without HTML: {missing}"
    assert (site / "404.html").is_file()


class _Resources(html.parser.HTMLParser):
    """Collects the URLs a page makes the browser load (not the links a reader may follow)."""

    LOADING = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"),
               ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data"), ("img", "srcset")}

    def __init__(self):
        super().__init__()
        self.urls = []
        self.styles = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for attr in ("src", "href", "data", "srcset"):
            if (tag, attr) in self.LOADING and attrs.get(attr):
                if tag == "link" and (attrs.get("rel") or "") in ("canonical", "alternate", "prev", "next"):
                    continue  # navigation metadata, nothing is fetched
                self.urls.append((tag, attrs[attr]))
        if attrs.get("style"):
            self.styles.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


EXTERNAL = re.compile(r"^\s*(https?:)?//", re.I)
CSS_EXTERNAL = re.compile(r"(url\(\s*['\"]?\s*(https?:)?//|@import\s+['\"]?\s*(https?:)?//)", re.I)


def test_no_page_loads_anything_from_outside(site):
    pages = sorted(site.rglob("*.html"))
    assert pages
    offenders = []
    for page in pages:
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8"))
        rel = page.relative_to(site)
        offenders += [f"{rel}: <{tag}> {url}" for tag, url in parser.urls if EXTERNAL.match(url)]
        offenders += [f"{rel}: style {s[:80]}" for s in parser.styles if CSS_EXTERNAL.search(s)]
    for css in site.rglob("*.css"):
        if CSS_EXTERNAL.search(css.read_text(encoding="utf-8", errors="replace")):
            offenders.append(f"{css.relative_to(site)}: external url() or @import")
    assert not offenders, "external resources:\n" + "\n".join(offenders)


def test_math_is_rendered_by_vendored_katex(site):
    for asset in ("katex.min.js", "katex.min.css", "contrib/auto-render.min.js"):
        assert (site / "assets" / "katex" / asset).is_file(), asset
    assert list((site / "assets" / "katex" / "fonts").glob("*.woff2"))
    page = _html_path(site, "losses/smooth-topk-svm.md").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in page
    assert "assets/katex/katex.min.js" in page and "assets/katex-init.js" in page
    assert "fonts.googleapis" not in page and "fonts.gstatic" not in page


def test_every_public_name_is_in_the_api_reference(site):
    import topkloss

    api = _html_path(site, "api.md").read_text(encoding="utf-8")
    missing = [name for name in topkloss.__all__ if f'id="topkloss.{name}"' not in api]
    assert not missing, f"public names without an entry in the API reference: {missing}"


def test_docstring_math_and_references_are_rendered(site):
    """The reST of the numpy docstrings (:math:, .. math::, :func:) is turned into Markdown."""
    api = _html_path(site, "api.md").read_text(encoding="utf-8")
    assert ":math:" not in api and ".. math::" not in api and ":func:" not in api
    assert 'class="arithmatex"' in api


def test_pages_include_their_figures(site):
    for page in BUILT_PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
            assert (DOCS / Path(page).parent / image).resolve().is_file(), (page, image)


# --- the >>> examples of the pages --------------------------------------------------------------
FENCE = re.compile(r"^(?P<indent>[ \t]*)```pycon[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def page_examples(page: str, names, pages):
    """The ``pycon`` blocks of a page, as they appear in the built site, dedented."""
    text = hooks.conditional_lines((DOCS / page).read_text(encoding="utf-8"), names, pages)
    blocks = []
    for match in FENCE.finditer(text):
        indent = len(match.group("indent"))
        body = "\n".join(line[indent:] for line in match.group("body").split("\n"))
        lineno = text[: match.start()].count("\n") + 2
        blocks.append((lineno, body))
    return blocks


def run_examples(pages):
    """Run every pycon block of ``pages`` (one namespace per page); return the failures."""
    import topkloss

    names, built = list(topkloss.__all__), set(pages)
    parser = doctest.DocTestParser()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL
    report = {"failures": [], "skipped": [], "run": 0}
    for page in pages:
        globs = {}
        for lineno, body in page_examples(page, names, built):
            needs = [m for m in re.findall(r"^>>> import (\w+)", body, re.M) if importlib.util.find_spec(m) is None]
            if needs:
                report["skipped"].append(f"{page}:{lineno} (needs {', '.join(needs)})")
                continue
            test = parser.get_doctest(body, globs, f"{page}:{lineno}", str(DOCS / page), lineno)
            out = []
            runner = doctest.DocTestRunner(optionflags=flags)
            runner.run(test, out=out.append, clear_globs=False)
            globs = test.globs  # the next block of the page sees this block's names
            report["run"] += 1
            if runner.failures:
                report["failures"].append("".join(out))
    return report


def test_page_examples_run(tmp_path):
    """In a fresh interpreter: the test suite's own settings (JAX x64) must not leak in."""
    pages = [p for p in BUILT_PAGES if (DOCS / p).exists()]
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [PYTHON, __file__, "--run-examples", str(out), *pages],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert not report["failures"], "\n".join(report["failures"])
    assert report["run"] >= 5


# --- the scripts behind the figures and tables ---------------------------------------------------
def test_plot_losses_script_runs(tmp_path):
    proc = subprocess.run(
        [PYTHON, "docs/scripts/plot_losses.py", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    made = {p.name for p in tmp_path.glob("*.png")}
    assert {"smooth_topk_svm.png", "log_esf.png"} <= made, made
    for png in made:  # the committed figure exists for every figure the script makes
        assert (DOCS / "img" / png).is_file(), f"docs/img/{png} is not committed: run make docs-plots"


def test_numerics_script_runs(tmp_path):
    proc = subprocess.run(
        [PYTHON, "docs/scripts/numerics.py", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("switch", "gradient", "float32"):
        assert (tmp_path / f"numerics_{name}.md").read_text().count("|") > 20


def test_benchmark_table_parses_and_plots(tmp_path):
    bench_docs = _load("bench_docs", DOCS / "scripts" / "bench_docs.py")
    rows = bench_docs.parse_table((DOCS / "benchmarks" / "cpu.md").read_text())
    assert rows and {"backend", "batch", "n", "loss", "ratio to CE"} <= set(rows[0])
    bench_docs.plot(rows, tmp_path / "bench.png", "test")
    assert (tmp_path / "bench.png").stat().st_size > 1000
    lines = bench_docs.summary(rows)
    first = next(r for r in rows if r["backend"] == "torch" and r["loss"] == "smooth_topk_svm")
    assert lines[1].startswith("torch smooth_topk_svm: " + first["ratio to CE"] + " / ")
    assert any(line.startswith("numpy k = 20 / k = 5: ") for line in lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run-examples"]:
        result = run_examples(sys.argv[3:])
        Path(sys.argv[2]).write_text(json.dumps(result))
        for line in result["skipped"]:
            print("skipped", line)
        print(f"{result['run']} blocks run, {len(result['failures'])} failed")
