"""Every ```python block of docs/*.md and README.md runs as pasted, so a false claim fails.

Each block is written to a file and run as a standalone script in its own Python
process, with ``trio.run`` patched to use ``MockClock(autojump_threshold=0)``: sleeps are
free. A block is skipped when it is fenced as anything but ``python`` (```text,
```pycon, ```console ...) or when the line before it (blank lines aside) is exactly
``<!-- no-run -->``. A block that imports an optional extra which is not installed is
skipped with the reason. Blocks run in parallel (one process each); each is its own test,
named ``file:line``.

Blocks written ahead of the code they need carry ``<!-- wave2: enable after merge -->``
on the line before ``<!-- no-run -->``; ``DOCS_RUN_WAVE2=1`` runs them too, so that a
merger can check them before deleting both lines.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
NO_RUN = "<!-- no-run -->"
WAVE2 = "<!-- wave2: enable after merge -->"
# DOCS_RUN_WAVE2=1 also runs the no-run blocks marked for enabling after the wave-2
# merge, so a merger can check them before deleting the two marker lines.
RUN_WAVE2 = os.environ.get("DOCS_RUN_WAVE2") == "1"
RUNNABLE = frozenset({"python", "python3", "py"})
# Top-level modules of the optional extras (and of their test servers): a block that
# imports one that is missing is skipped, not failed.
OPTIONAL = frozenset(
    {"httpx", "hypercorn", "coredis", "prometheus_client", "opentelemetry", "rich", "matplotlib"}
)
TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")

# Run in the block's own process before the block: patch trio.run, then run the block.
_PATCH = textwrap.dedent(
    """
    import runpy, sys
    import trio, trio.testing

    _real_run = trio.run

    def _autojump_run(async_fn, *args, clock=None, **kwargs):
        if clock is None:
            clock = trio.testing.MockClock(autojump_threshold=0)
        return _real_run(async_fn, *args, clock=clock, **kwargs)

    trio.run = _autojump_run
    """
)
_RUNNER = _PATCH + textwrap.dedent(
    """
    path = sys.argv[1]
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
    """
)
# Where fork exists, one process imports trio and the library once, then forks a child
# per block (each a fresh process running the block as __main__): start-up is paid once.
_FORK_SERVER = _PATCH + textwrap.dedent(
    """
    import json, os, signal, traceback
    import trio_resilience, trio_resilience.testing, structlog  # the shared imports

    def child(script):
        out = os.open(script + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(script + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.argv = [script]
        code = 0
        signal.alarm(max(1, int(timeout)))  # a block that hangs is killed by SIGALRM
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    scripts, workers, timeout = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    pending, running, codes = list(scripts), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            script = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                child(script)
            running[pid] = script
        # Block until a child ends: each child's own alarm bounds how long that takes.
        pid, status = os.waitpid(-1, 0)
        script = running.pop(pid)
        codes[script] = os.waitstatus_to_exitcode(status)
    print(json.dumps(codes))
    """
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    info: str  # the fence's language
    source: str
    no_run: bool
    wave2: bool = False  # marked to be enabled once wave 2 is merged

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.info in RUNNABLE and (not self.no_run or (self.wave2 and RUN_WAVE2))


def extract(text: str, page: str = "<text>") -> Iterator[Block]:
    """Every fenced block of a Markdown text, with its language and no-run mark."""
    lines = text.splitlines()
    previous = before = ""  # the last two non-blank lines outside a block
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            if lines[i].strip():
                previous, before = lines[i].strip(), previous
            i += 1
            continue
        fence, start = match["fence"], i
        body = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                break
            body.append(lines[i])
            i += 1
        yield Block(
            page=page,
            line=start + 1,
            info=match["info"].lower(),
            source=textwrap.dedent("\n".join(body)) + "\n",
            no_run=previous == NO_RUN,
            wave2=previous == NO_RUN and before == WAVE2,
        )
        previous = before = ""
        i += 1


def _all_blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        blocks.extend(extract(path.read_text(encoding="utf-8"), page))
    return blocks


BLOCKS = [b for b in _all_blocks() if b.runnable]


def missing_extras(source: str) -> list[str]:
    """Optional top-level modules the block imports that are not installed."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the run reports it
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names & OPTIONAL if importlib.util.find_spec(n) is None)


def _run(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in a fresh interpreter."""
    script = _script(block, folder)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _script(block: Block, folder: Path) -> Path:
    script = folder / f"{block.page.replace('/', '_')}_{block.line}.py"
    script.write_text(block.source, encoding="utf-8")
    return script


def _run_all(blocks: list[Block], folder: Path) -> dict[str, Outcome]:
    """Run the blocks concurrently: forked from one warm process, else one process each."""
    workers = max(2, os.cpu_count() or 2)
    if not blocks:
        return {}
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = dict(zip(blocks, pool.map(lambda b: _run(b, folder), blocks), strict=True))
        return {b.id: Outcome(d.returncode, d.stdout, d.stderr) for b, d in done.items()}
    scripts = {str(_script(b, folder)): b for b in blocks}
    server = subprocess.run(
        [sys.executable, "-c", _FORK_SERVER, json.dumps(list(scripts)), str(workers), str(TIMEOUT)],
        cwd=folder,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * len(blocks),
        check=False,
    )
    if server.returncode:
        raise RuntimeError(f"the block runner failed:\n{server.stderr}")
    codes = json.loads(server.stdout.splitlines()[-1])
    outcomes = {}
    for script, block in scripts.items():
        outcomes[block.id] = Outcome(
            codes[script],
            Path(script + ".out").read_text(encoding="utf-8", errors="replace"),
            Path(script + ".err").read_text(encoding="utf-8", errors="replace"),
        )
    return outcomes


@dataclass(frozen=True)
class Outcome:
    """How a block's run ended."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    """Run every selected block at once, each in its own process; tests read their own."""
    selected = {
        item.callspec.params["block"].id
        for item in request.session.items
        if item.path == Path(__file__)
        and hasattr(item, "callspec")
        and "block" in item.callspec.params
    }
    blocks = [b for b in BLOCKS if b.id in selected and not missing_extras(b.source)]
    return _run_all(blocks, tmp_path_factory.mktemp("doc_blocks"))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs_as_pasted(block: Block, runs: dict[str, Outcome]) -> None:
    """The block runs to the end as a standalone script under an autojump clock."""
    missing = missing_extras(block.source)
    if missing:
        pytest.skip(f"needs the optional {', '.join(missing)} (not installed)")
    done = runs[block.id]
    if done.returncode:
        pytest.fail(
            f"{block.id} failed (exit status {done.returncode}):\n{done.stderr[-3000:]}",
            pytrace=False,
        )


def test_the_pages_have_blocks_to_run() -> None:
    """The extractor finds the runnable blocks (an empty list would pass vacuously)."""
    assert len(BLOCKS) >= 20
    assert any(b.page == "README.md" for b in BLOCKS)
    assert any(b.page == "docs/tutorial.md" for b in BLOCKS)


def test_extract_skips_other_languages_and_no_run_blocks() -> None:
    """Only ```python blocks run; ```text, ```pycon and a block after <!-- no-run --> do not."""
    page = textwrap.dedent(
        """\
        # Title

        ```python
        print("runs")
        ```

        ```text
        not python
        ```

        ```pycon
        >>> 1 + 1
        ```

        <!-- no-run -->

        ```python
        fragment()
        ```

        ````markdown
        ```python
        inside another fence
        ```
        ````

        <!-- wave2: enable after merge -->
        <!-- no-run -->
        ```python
        later()
        ```
        """
    )
    blocks = list(extract(page))
    assert [(b.line, b.info, b.no_run, b.wave2) for b in blocks] == [
        (3, "python", False, False),
        (7, "text", False, False),
        (11, "pycon", False, False),
        (17, "python", True, False),
        (21, "markdown", False, False),
        (29, "python", True, True),
    ]
    wave2 = ["later()\n"] if RUN_WAVE2 else []
    assert [b.source for b in blocks if b.runnable] == ['print("runs")\n', *wave2]


def test_a_failing_block_fails_and_trio_run_uses_an_autojump_clock(tmp_path: Path) -> None:
    """The runner really runs the block: a false assertion fails, and sleeps are free."""
    sleepy = Block(
        "x.md",
        1,
        "python",
        "import time, trio\n"
        "start = time.perf_counter()\n"
        "trio.run(trio.sleep, 3600)\n"
        "assert time.perf_counter() - start < 30\n"
        "print('slept an hour')\n",
        False,
    )
    done = _run(sleepy, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "slept an hour\n"
    wrong = Block("x.md", 2, "python", "assert 1 + 1 == 3, 'false claim'\n", False)
    done = _run(wrong, tmp_path)
    assert done.returncode == 1
    assert "AssertionError: false claim" in done.stderr


def test_blocks_needing_a_missing_extra_are_skipped() -> None:
    """A block importing an absent optional module is reported, core imports are not."""
    assert missing_extras("import trio\nfrom trio_resilience import Retry\n") == []
    source = "import httpx\nfrom coredis import Redis\n"
    expected = [n for n in ("coredis", "httpx") if importlib.util.find_spec(n) is None]
    assert missing_extras(source) == expected


def test_forked_runs_are_separate_processes_with_their_own_outcome(tmp_path: Path) -> None:
    """Blocks run together still fail alone, print alone and share no module state."""
    blocks = [
        Block("x.md", 1, "python", "import sys\nsys.marker = 1\nprint('one')\n", False),
        Block("x.md", 2, "python", "import sys\nassert not hasattr(sys, 'marker')\n", False),
        Block("x.md", 3, "python", "raise SystemExit(3)\n", False),
        Block("x.md", 4, "python", "import trio\ntrio.run(trio.sleep, 86400)\n", False),
    ]
    outcomes = _run_all(blocks, tmp_path)
    assert [outcomes[b.id].returncode for b in blocks] == [0, 0, 3, 0]
    assert outcomes["x.md:1"].stdout == "one\n"
    assert outcomes["x.md:2"].stdout == ""


def test_api_signatures_show_short_linked_type_names(tmp_path: Path) -> None:
    """The API page renders parsed signatures: ``Backoff``, never ``~trio_resilience.Backoff``."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    pytest.importorskip("sphinxcontrib_trio")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "text",
            "-q",
            "-d",
            str(tmp_path / "doctrees"),
            str(ROOT / "docs"),
            str(tmp_path),
            str(ROOT / "docs" / "api.md"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    api = (tmp_path / "api.txt").read_text(encoding="utf-8")
    assert "~trio_resilience" not in api
    assert "recovery_timeout: float | Backoff = 30.0" in api
    assert "backoff: Backoff = ExponentialBackoff(base=0.1, multiplier=2.0" in api
    assert "= _" not in api  # no private constant as a default


def _run_all_module() -> Any:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_FAKE_BENCH = """
import json
print(json.dumps({"bench": "%(title)s", "what": "%(what)s", "baseline": "bare", "us": 2.0,
                  "baseline_us": 1.0, "ratio": %(ratio)s, "target": "<= 3x", "met": %(met)s}))
print(json.dumps({"bench": "%(title)s", "extra": {"memory growth (bytes)": 128}}))
"""


def test_benchmarks_page_has_a_section_for_every_bench_module(tmp_path: Path) -> None:
    """run_all finds bench_*.py by pattern; each module gets a section; misses are flagged."""
    run_all = _run_all_module()
    (tmp_path / "bench_alpha.py").write_text(
        _FAKE_BENCH % {"title": "alpha things", "what": "alpha call", "ratio": 2.0, "met": True}
    )
    (tmp_path / "bench_beta.py").write_text(
        _FAKE_BENCH % {"title": "beta things", "what": "beta call", "ratio": 4.0, "met": False}
    )
    (tmp_path / "bench_gamma.py").write_text("import no_such_optional_package\n")
    (tmp_path / "bench_delta.py").write_text("raise RuntimeError('broken benchmark')\n")
    (tmp_path / "sim_other.py").write_text("raise SystemExit('not a benchmark')\n")
    scripts = run_all.discover(tmp_path)
    assert [s.name for s in scripts] == [
        "bench_alpha.py",
        "bench_beta.py",
        "bench_delta.py",
        "bench_gamma.py",
    ]
    assert [s.name for s in run_all.discover(tmp_path, ["beta"])] == ["bench_beta.py"]
    runs = [run_all.run(s) for s in scripts]
    assert runs[3].missing == "no_such_optional_package"
    assert "broken benchmark" in runs[2].error
    page = run_all.render(runs, when="Run today.")
    assert "## alpha things" in page
    assert "## beta things" in page
    assert "| alpha call | 2.000 | bare | 1.000 | 2.00x | <= 3x | yes |" in page
    assert "| beta call | 2.000 | bare | 1.000 | 4.00x | <= 3x | **no** |" in page
    assert "2 targets, missed: beta call." in page
    assert "| memory growth (bytes) | | | | 128 B | flat | yes |" in page
    assert "- `benchmarks/bench_gamma.py`: needs `no_such_optional_package`, not installed." in page
    assert "- `benchmarks/bench_delta.py`: failed." in page
    assert run_all.missed_targets(runs) == ["beta call"]
