"""The documentation runs as written, builds strictly, and its figures can be redrawn.

Conventions for the code blocks of ``docs/**/*.md``:

- A fenced block whose info string starts with ``python`` or ``bash`` is executed. The blocks
  of one page run in page order, in one fresh temporary working directory, inside one
  subprocess (so a page cannot disturb this test process or another page). The python
  blocks of a page share one namespace; bash blocks run with ``bash -euo pipefail``. Blocks
  in other languages (``text``, ``toml``, ...) are never executed.
- ``<!-- no-run: REASON -->`` on the line before a fence: the block is not executed and
  shows up as a skipped test with REASON. It must still be valid: a python block must
  compile, a bash block must pass ``bash -n``, and each ``tinygrad-rnn ...`` command in it
  must be accepted by the CLI's own argument parser.
- A block with ``title="PATH"`` in its info string is a file, not a command: it is written to
  PATH (relative to the page's working directory) when the page reaches it. A python file
  must compile.
- Page requirements, as HTML comments anywhere in a page; when one is unmet, the page's
  blocks are skipped with the reason:
  ``<!-- docs-test: needs-gpu -->`` (the CuPy backend is usable),
  ``<!-- docs-test: needs-data SUBDIR -->`` (``$TINYGRAD_RNN_DATA/SUBDIR`` exists),
  ``<!-- docs-test: needs-module NAME -->`` (NAME is importable).
- Training commands on a page are shortened with ``--max-steps`` on the page itself, and
  the page says so (and gives the full command in a no-run block): what the reader runs is
  what the test runs.

The site must build with ``mkdocs build --strict``, and every name of a public ``__all__``
must have an entry in the API reference.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCRIPTS = DOCS / "scripts"
RUNNABLE = ("python", "bash")
PAGE_TIMEOUT_S = 300

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NO_RUN = re.compile(r"^\s*<!--\s*no-run(?::\s*(?P<reason>.*?))?\s*-->\s*$")
REQUIREMENT = re.compile(r"<!--\s*docs-test:\s*(?P<kind>[\w-]+)(?:\s+(?P<arg>[^\s>]+))?\s*-->")
TITLE = re.compile(r"""title=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>\S+))""")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # path relative to docs/
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    title: str | None  # a file to write, when the info string has title="..."
    no_run: str | None  # the reason, when the block is marked no-run

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, in order."""
    page = path.relative_to(DOCS).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        body = []
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = NO_RUN.match(previous)
        title = TITLE.search(info)
        blocks.append(
            Block(
                page=page,
                line=i + 1,
                lang=info.split()[0].lower() if info else "",
                code="\n".join(body) + "\n",
                title=None if title is None else (title["dq"] or title["sq"] or title["bare"]),
                no_run=None if marker is None else (marker["reason"] or "marked no-run"),
            )
        )
        i = j + 1
    return blocks


def page_requirement_unmet(path: Path) -> str | None:
    """Why the page's blocks cannot run here, or None when they can."""
    for match in REQUIREMENT.finditer(path.read_text(encoding="utf-8")):
        kind, arg = match["kind"], match["arg"]
        if kind == "needs-gpu":
            from tinygrad_rnn.backend import get_backend

            reason = get_backend("cupy").unavailable_reason()
            if reason is not None:
                return f"needs a GPU: {reason}"
        elif kind == "needs-data":
            from tinygrad_rnn.data import DATA_ENV, data_root

            root = data_root()
            if root is None or not os.path.isdir(os.path.join(root, arg)):
                return f"needs the data set {arg}/ under ${DATA_ENV} (set {DATA_ENV})"
        elif kind == "needs-module":
            if importlib.util.find_spec(arg) is None:
                return f"needs the Python module {arg!r}"
        else:
            raise ValueError(f"{path.name}: unknown docs-test requirement {kind!r}")
    return None


PAGES = sorted(DOCS.rglob("*.md"))
BLOCKS = {page: parse_blocks(page) for page in PAGES}


def _is_file(block: Block) -> bool:
    return block.title is not None


def _runs(block: Block) -> bool:
    return block.no_run is None and (_is_file(block) or block.lang in RUNNABLE)


RUN_PAGES = [page for page in PAGES if any(_runs(b) for b in BLOCKS[page])]
DISABLED = [b for page in PAGES for b in BLOCKS[page] if b.no_run and b.lang in RUNNABLE]


# Runs in the page's subprocess: files are written, python shares one namespace, bash is bash.
RUNNER = textwrap.dedent(
    """
    import json, os, subprocess, sys, traceback
    namespace = {"__name__": "__docs__"}
    for block in json.load(open(sys.argv[1], encoding="utf-8")):
        where = block["page"] + ":" + str(block["line"])
        print("--- " + where + " (" + (block["title"] or block["lang"]) + ")", flush=True)
        if block["title"]:
            os.makedirs(os.path.dirname(block["title"]) or ".", exist_ok=True)
            with open(block["title"], "w", encoding="utf-8") as f:
                f.write(block["code"])
        elif block["lang"] == "python":
            try:
                exec(compile(block["code"], where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print("FAILED: the python block at " + where, flush=True)
                sys.exit(1)
        else:
            sys.stdout.flush()
            code = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]]).returncode
            if code:
                print("FAILED: the bash block at " + where + " exited with " + str(code))
                sys.exit(1)
    """
)


def page_env(backend_name: str, bin_dir: Path) -> dict[str, str]:
    """The environment of a page: this checkout first on the path, absolute data folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    env["TINYGRAD_RNN_BACKEND"] = backend_name
    # The pages' matmuls are small: extra BLAS threads only spin, and on a shared 2-core
    # machine they made the training pages several times slower. A reader's setting wins.
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(threads, "1")
    data = env.get("TINYGRAD_RNN_DATA")
    if data:  # CI gives a relative path; the page runs elsewhere
        env["TINYGRAD_RNN_DATA"] = os.path.abspath(data)
    if shutil.which("tinygrad-rnn") is None:  # not installed: run the checkout's CLI
        bin_dir.mkdir(parents=True, exist_ok=True)
        shim = bin_dir / "tinygrad-rnn"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tinygrad_rnn.cli "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_runs_as_written(page: Path, tmp_path: Path, backend_name: str) -> None:
    reason = page_requirement_unmet(page)
    if reason is not None:
        pytest.skip(reason)
    blocks = [asdict(b) for b in BLOCKS[page] if _runs(b)]
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")],
        cwd=work,
        env=page_env(backend_name, tmp_path / "bin"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PAGE_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{page.name} does not run as written:\n{result.stdout}"


def _commands(bash: str) -> list[list[str]]:
    """The simple commands of a bash snippet, as argument lists (comments dropped)."""
    joined = re.sub(r"\\\n", " ", bash)
    commands = []
    for line in joined.splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part, comments=True)
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)  # leading VAR=value assignments
            if words:
                commands.append(words)
    return commands


def check_cli_commands(block: Block) -> None:
    """Every `tinygrad-rnn ...` command of a bash block parses with the real CLI parser."""
    from tinygrad_rnn.cli import build_parser

    for words in _commands(block.code):
        if words[0] != "tinygrad-rnn":
            continue
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exit_:
            pytest.fail(f"{block.where}: the CLI rejects `{shlex.join(words)}` ({exit_})")


@pytest.mark.parametrize("block", DISABLED, ids=lambda b: b.where)
def test_disabled_block_stays_valid(block: Block) -> None:
    if block.lang == "python":
        compile(block.code, block.where, "exec")
    else:
        result = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert result.returncode == 0, f"{block.where}: bash syntax error\n{result.stderr}"
        check_cli_commands(block)
    pytest.skip(f"not run ({block.where}): {block.no_run}")


def test_file_blocks_compile() -> None:
    for page in PAGES:
        for block in BLOCKS[page]:
            if _is_file(block) and block.lang == "python":
                compile(block.code, f"{block.where} ({block.title})", "exec")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with `mkdocs build --strict` (skips when mkdocs is missing)."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # No --quiet: it drops the plugins' warnings before --strict counts them.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
    return site


def test_mkdocs_build_strict(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    assert (built_site / "guide" / "choosing-a-topology" / "index.html").is_file()
    assert (built_site / "results" / "index.html").is_file()


# The packages whose `__all__` is the public surface; each name must have a reference entry.
PUBLIC_PACKAGES = (
    "tinygrad_rnn", "tinygrad_rnn.nn", "tinygrad_rnn.nn.functional", "tinygrad_rnn.optim",
    "tinygrad_rnn.checkpoint", "tinygrad_rnn.interop", "tinygrad_rnn.data",
    "tinygrad_rnn.testing", "tinygrad_rnn.train", "topologies",
)  # fmt: skip


def _anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "reference").rglob("index.html"):
        ids.update(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    return ids


def test_every_public_name_has_a_reference_entry(built_site: Path) -> None:
    """A name in a public `__all__` renders under its own path or the module defining it."""
    anchors = _anchors(built_site)
    missing = []
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.ismodule(value):
                continue
            candidates = {f"{package}.{name}"}
            defined_in = getattr(value, "__module__", None)
            if (inspect.isclass(value) or inspect.isfunction(value)) and defined_in:
                candidates.add(f"{defined_in}.{value.__qualname__}")
            else:  # a constant: rendered in the submodule that assigns it
                candidates |= {a for a in anchors if a.startswith(f"{package}.")
                               and a.rsplit(".", 1)[-1] == name}  # fmt: skip
            if not candidates & anchors:
                missing.append(f"{package}.{name}")
    assert not missing, f"public names without a reference entry: {missing}"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Figures copied from real training runs (the README's headline pictures), not drawn by a
# script: `tinygrad-rnn train sine` writes prediction.png, `train ptb` perplexity.png.
RUN_FIGURES = {"sine-prediction.png", "ptb-perplexity.png"}


def test_run_figures_are_pngs() -> None:
    for name in RUN_FIGURES:
        assert (DOCS / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_figure_scripts_redraw_every_committed_image(tmp_path: Path) -> None:
    written = set()
    for script in ("diagrams.py", "lanes.py"):
        result = subprocess.run(
            [sys.executable, str(SCRIPTS / script), "--out", str(tmp_path)],
            env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"{script} failed:\n{result.stderr}"
        written |= {Path(line).name for line in result.stdout.split()}
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    committed = {p.name for p in (DOCS / "images").glob("*.png")} - RUN_FIGURES
    assert committed <= written, f"images no script draws: {sorted(committed - written)}"
    expected = {f"topology-{n}.png" for n in _load_script("diagrams").DIAGRAMS}
    assert expected | {"tbptt-lanes.png"} <= written


def test_lanes_figure_reads_the_real_batcher() -> None:
    """The leftover cells of the figure are exactly the positions no batch reads as input."""
    lanes = _load_script("lanes")
    from tinygrad_rnn.data import StatefulBatcher

    batcher = StatefulBatcher(list(range(41)), batch_size=4, time_size=3)
    owner = lanes.batch_of_positions(batcher)
    assert (batcher.jump, len(batcher)) == (10, 3)
    assert [p for p in range(41) if owner[p] < 0] == [9, 19, 29, 39, 40]
    assert owner[[0, 3, 6, 13, 38]].tolist() == [0, 1, 2, 1, 2]
