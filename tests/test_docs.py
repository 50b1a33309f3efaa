"""The documentation site (docs/, issue 31): every public name has an API page, the public docstrings' examples
run, and the built site's internal links, anchors and images resolve; where a headless chromium is installed, the
index and a gallery page render with their figures."""
from __future__ import annotations

import doctest
import html.parser
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

import neurosubset as ns

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# -- every public name has an API page in the source --------------------------------------------------------------

def _autosummary_entries(rst: str) -> dict[str, set[str]]:
    """currentmodule -> the names listed in its autosummary blocks (parsed from the .rst text)."""
    out: dict[str, set[str]] = {}
    module = None
    in_block = False
    for line in rst.splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module, in_block = m.group(1), False
        elif line.startswith(".. autosummary::"):
            in_block = True
        elif in_block:
            if line.strip().startswith(":") or not line.strip():
                continue
            if not line.startswith("   "):
                in_block = False
                continue
            out.setdefault(module, set()).add(line.strip().lstrip("~"))
    return out


def test_every_public_name_has_an_api_page():
    entries = _autosummary_entries((DOCS / "api.rst").read_text())
    listed = entries.get("neurosubset", set())
    missing = [name for name in ns.__all__ if name not in listed]
    assert not missing, f"public names without an API page: add them to an autosummary in docs/api.rst: {missing}"
    assert set(listed) <= set(ns.__all__) | {"__version__"}, sorted(set(listed) - set(ns.__all__))
    # the template renders every class with its members, so methods get pages too
    assert ":members:" in (DOCS / "_templates" / "autosummary" / "class.rst").read_text()


def test_autosummary_parser_reads_blocks():
    rst = (".. currentmodule:: a\n\n.. autosummary::\n   :toctree: generated\n\n   f\n   ~g\n\ntext\n\n"
           ".. currentmodule:: b\n\n.. autosummary::\n\n   h\n")
    assert _autosummary_entries(rst) == {"a": {"f", "g"}, "b": {"h"}}


# -- doctests of the public docstrings ----------------------------------------------------------------------------

def _public_objects():
    """Every object of ``neurosubset.__all__`` and the public methods / properties of its classes, once each."""
    seen, out = set(), []
    for name in ns.__all__:
        obj = getattr(ns, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        items = [(f"neurosubset.{name}", obj)]
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                value = getattr(value, "__func__", value)
                value = value.fget if isinstance(value, property) else value
                if inspect.isroutine(value):
                    items.append((f"neurosubset.{name}.{attr}", value))
        for qualname, value in items:
            if id(value) not in seen and (value.__doc__ or ""):
                seen.add(id(value))
                out.append((qualname, value))
    return out


def _doctests():
    finder = doctest.DocTestFinder(recurse=False, exclude_empty=True)
    tests = []
    for qualname, obj in _public_objects():
        for test in finder.find(obj, qualname, globs={}):
            if test.examples:
                tests.append(test)
    return tests


DOCTESTS = _doctests()


def test_public_docstrings_have_examples():
    """The main public functions teach by example (doctests that run, not only ``+SKIP`` ones)."""
    runnable = {t.name for t in DOCTESTS if any(not ex.options.get(doctest.SKIP) for ex in t.examples)}
    for name in ["neurosubset.allocate", "neurosubset.match_probability", "neurosubset.certify",
                 "neurosubset.simplex_grid", "neurosubset.Circuit.from_dict", "neurosubset.Circuit.from_connectivity",
                 "neurosubset.wilson_interval"]:
        assert name in runnable, f"{name} has no runnable docstring example"


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples_run(test, monkeypatch):
    """Each public docstring's examples, run from the repository root (they read ``circuits/``)."""
    monkeypatch.chdir(ROOT)
    globs = {"ns": ns, "np": np, **{name: getattr(ns, name) for name in ns.__all__}}
    test.globs = dict(globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = []
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)


# -- the built site -----------------------------------------------------------------------------------------------

# `make docs` (and the fixture below, after a build of its own) leaves this stamp with the build's start time: the site
# holds every source older than it
STAMP = DOCS / "_build" / "html" / ".sources-stamp"
# what the site is built from: the pages and the sphinx extensions, the gallery, the package (autodoc), the analysis
# report and the circuits and data files that examples and pages read
SOURCES = ["docs", "examples", "neurosubset", "analysis", "circuits", "data", "pyproject.toml"]


def _newer_sources(stamp: Path) -> list[str] | None:
    """The source files (git-tracked or untracked but not ignored, under :data:`SOURCES`) modified after ``stamp``;
    None where that cannot be told (no stamp, no git)."""
    if not stamp.is_file():
        return None
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *SOURCES],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    since = stamp.stat().st_mtime
    files = [ROOT / name for name in dict.fromkeys(listed.split("\0")) if name]
    return [str(f.relative_to(ROOT)) for f in files if f.is_file() and f.stat().st_mtime > since]


@pytest.fixture(scope="session")
def site() -> Path:
    """docs/_build/html as ``make docs`` built it when no source changed since (its stamp, the build's start time);
    otherwise brought up to date by an incremental ``sphinx-build -W -n`` where Sphinx is installed (only changed
    gallery examples re-run), else as ``make docs`` left it."""
    out = DOCS / "_build" / "html"
    if _newer_sources(STAMP) == [] and (out / "index.html").is_file():
        return out  # `make docs` just built it from these sources (CI: .ci/run runs it before the tests)
    if importlib.util.find_spec("sphinx") is not None and importlib.util.find_spec("sphinx_gallery") is not None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
                               str(DOCS), str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stderr[-4000:]}"
        STAMP.touch()
        os.utime(STAMP, (started, started))
    elif not (out / "index.html").exists():
        pytest.skip("SKIPPED LOUDLY: Sphinx is not installed and docs/_build/html does not exist: run `make docs` "
                    "(installs the docs extra) to check the built site")
    return out


def test_newer_sources_tells_a_stale_site_from_a_fresh_one(tmp_path):
    """The freshness rule on the real tree: a stamp older than a source file lists it; a stamp from the future lists
    nothing; no stamp: unknown (the fixture builds)."""
    stamp = tmp_path / "stamp"
    assert _newer_sources(stamp) is None
    stamp.touch()
    if not (ROOT / ".git").exists():
        pytest.skip("SKIPPED LOUDLY: not a git checkout: the site fixture cannot list the sources and always builds")
    source = ROOT / "neurosubset" / "__init__.py"
    os.utime(stamp, (source.stat().st_mtime - 10, source.stat().st_mtime - 10))
    assert "neurosubset/__init__.py" in _newer_sources(stamp)
    future = time.time() + 3600
    os.utime(stamp, (future, future))
    assert _newer_sources(stamp) == []


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag in ("a", "link") and a.get("href"):
            self.refs.append((tag, a["href"]))
        if tag in ("img", "script") and a.get("src"):
            self.refs.append((tag, a["src"]))
            if tag == "img":
                self.images.append(a["src"])


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _internal_problems(site: Path) -> tuple[list[str], int, int]:
    # pages only: _static holds the theme's Jinja macro files (webpack-macros.html), not pages
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)
    parsed = {p: _parse(p) for p in pages}
    problems, n_links, n_images = [], 0, 0
    for page, refs in parsed.items():
        for tag, ref in refs.refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith("//"):
                continue  # external (http, https, mailto, data, javascript): not fetched offline
            n_links += 1
            n_images += tag == "img"
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(site)}: <{tag}> {ref} -> missing {target}")
                continue
            if parts.fragment and target.suffix == ".html" and target in parsed:
                if unquote(parts.fragment) not in parsed[target].ids:
                    problems.append(f"{page.relative_to(site)}: <{tag}> {ref}: no id '{parts.fragment}'")
    return problems, n_links, n_images


@pytest.mark.slow
@pytest.mark.xdist_group("docs_site")  # one site build per run, not one per worker
def test_site_internal_links_and_images_resolve(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 80  # the API pages alone are more than that
    problems, n_links, n_images = _internal_problems(site)
    assert not problems, f"{len(problems)} broken internal references, e.g.:\n" + "\n".join(problems[:30])
    assert n_links > 1000 and n_images > 20


def test_link_checker_finds_broken_references(tmp_path):
    """The checker itself, on a hand-written site: a missing page, a missing anchor and a missing image."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.html").write_text('<p id="top">x</p><a href="sub/b.html#here">ok</a><a href="#top">ok</a>'
                                     '<a href="https://example.org/x">external</a>')
    (tmp_path / "sub" / "b.html").write_text('<h1 id="here">b</h1><a href="../a.html#nowhere">bad anchor</a>'
                                             '<a href="c.html">missing page</a><img src="../img/p.png">')
    problems, n_links, n_images = _internal_problems(tmp_path)
    assert n_links == 5 and n_images == 1
    assert len(problems) == 3, problems
    assert any("nowhere" in p for p in problems) and any("c.html" in p for p in problems)
    assert any("p.png" in p for p in problems)


def test_every_gallery_example_is_on_the_gallery_page_source():
    examples = sorted(p.stem for p in (ROOT / "examples").glob("*.py"))
    assert len(examples) >= 8
    assert all(re.match(r'^"""\n[^\n]+\n=+\n', (ROOT / "examples" / f"{e}.py").read_text()) for e in examples), \
        "every example starts with a docstring title (sphinx-gallery)"


# -- screenshots (headless chromium, where installed) -------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"):
        if path := shutil.which(name):
            return path
    return None


class _Browser:
    """One headless chromium for every screenshot, driven over ``--remote-debugging-pipe`` (the DevTools protocol:
    JSON messages ended by NUL, read by chromium on fd 3 and written on fd 4). External requests are blocked (the
    site is checked offline); a screenshot waits for the load event, the fonts and every image (loaded or failed)."""

    def __init__(self, path: str, width: int = 1280, height: int = 12000, timeout: float = 120.0):
        import tempfile

        read_end, self._send = os.pipe()  # chromium reads commands from fd 3
        self._recv, write_end = os.pipe()  # and writes replies and events to fd 4
        keep = [os.dup(read_end), os.dup(write_end)]
        while min(keep) < 5:  # numbers above 4, so that the dup2 to 3 and 4 in the child clobbers neither
            keep = [os.dup(fd) if fd < 5 else fd for fd in keep]

        def fds():
            import resource

            os.dup2(keep[0], 3)
            os.dup2(keep[1], 4)
            # chromium reserves far more address space than it uses (V8's pointer cage) and traps under a tight
            # `ulimit -v`: lift the soft limit to the hard one in this child only
            resource.setrlimit(resource.RLIMIT_AS, (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2)

        self._profile = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen([path, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      "--allow-file-access-from-files", "--remote-debugging-pipe",
                                      f"--user-data-dir={self._profile.name}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=fds, pass_fds=(3, 4))
        for fd in {read_end, write_end, *keep}:
            os.close(fd)
        self._buffer, self._id, self._events, self.timeout = b"", 0, [], timeout
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method, params in (("Page.enable", {}), ("Network.enable", {}),
                               ("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]}),
                               ("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                       "deviceScaleFactor": 1, "mobile": False})):
            self._call(method, session=True, **params)

    def _message(self) -> dict:
        import json
        import select

        while b"\0" not in self._buffer:
            if not select.select([self._recv], [], [], self.timeout)[0]:
                raise TimeoutError(f"chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._recv, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _call(self, method: str, session: bool = False, **params) -> dict:
        import json

        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while (reply := self._message()).get("id") != self._id:
            self._events.append(reply)
        assert "error" not in reply, f"chromium: {method}: {reply['error']}"
        return reply["result"]

    def screenshot(self, page: Path, out: Path) -> np.ndarray:
        """The page rendered at 1280 x 12000 px, as ``(12000, 1280, 3)`` uint8 RGB (also written to ``out``)."""
        import base64

        from PIL import Image

        self._events.clear()
        self._call("Page.navigate", session=True, url=page.as_uri())
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._events.append(self._message())
        self._call("Runtime.evaluate", session=True, awaitPromise=True, expression=(
            "Promise.all([document.fonts.ready, ...Array.from(document.images, i => i.complete ? 0 : "
            "new Promise(r => { i.onload = i.onerror = r; }))])"))
        out.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", session=True, format="png")["data"]))
        return np.asarray(Image.open(out).convert("RGB"))

    def close(self) -> None:
        try:
            self._call("Browser.close")
            self.proc.wait(timeout=30)
        except (AssertionError, OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._send)
            os.close(self._recv)
            self._profile.cleanup()


def _colours(image: np.ndarray) -> int:
    """The number of distinct RGB colours of ``image`` ``(..., 3)`` uint8 (packed into one integer per pixel: the
    same count as ``np.unique(image.reshape(-1, 3), axis=0)``, twenty times faster)."""
    rgb = image.reshape(-1, 3).astype(np.uint32)
    return len(np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]))


def test_colour_count_equals_the_row_unique_count():
    image = np.random.default_rng(0).integers(0, 4, size=(50, 40, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 1)
    assert _colours(image) == len(np.unique(image.reshape(-1, 3), axis=0))


@pytest.mark.slow
@pytest.mark.xdist_group("docs_site")  # one site build per run, not one per worker
def test_index_and_a_gallery_page_render_with_their_figures(site, tmp_path):
    path = _chromium()
    if path is None:
        pytest.skip("SKIPPED LOUDLY: no headless chromium on PATH (chromium, chromium-browser, google-chrome); "
                    "the site's rendering was not checked. Install one (e.g. apt-get install chromium) to run it.")
    browser = _Browser(path)
    try:
        for page in (site / "index.html", site / "tutorial" / "plot_tutorial.html",
                     site / "auto_examples" / "plot_02_fraction_sweep_ternary.html"):
            shot = browser.screenshot(page, tmp_path / f"{page.stem}.png")
            assert shot.shape[0] > 1000 and shot.shape[1] == 1280
            assert _colours(shot) > 200, f"{page.name} renders nearly blank"
            # the same page with every image's source broken: where the figures rendered, the pixels differ over
            # at least the area of a small figure (200 x 150 px); a page whose images failed shows the same icons
            images = _parse(page).images
            assert any("_images/" in src for src in images), f"{page.name} has no figures"
            broken = page.with_name(page.stem + "_noimages.html")
            text = page.read_text(encoding="utf-8")
            # every figure is under _images/ (src and srcset): point them at a folder that does not exist
            broken.write_text(text.replace("_images/", "_images_missing/"), encoding="utf-8")
            try:
                without = browser.screenshot(broken, tmp_path / f"{page.stem}_noimages.png")
            finally:
                broken.unlink()
            rows = min(shot.shape[0], without.shape[0])
            differing = np.any(shot[:rows] != without[:rows], axis=-1).sum()
            assert differing > 200 * 150, f"{page.name}: its figures do not render ({differing} pixels differ)"
    finally:
        browser.close()


# -- the README is the landing page -------------------------------------------------------------------------------

def test_readme_is_a_short_landing_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 150
    for heading in ("## Two commands", "## Ten lines of Python", "## Documentation"):
        assert heading in text
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t for t in targets if not urlsplit(t).scheme]
    assert any(t.endswith(".png") for t in local), "the README shows a figure"
    missing = [t for t in local if not (ROOT / unquote(urlsplit(t).path)).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert "make docs" in text
