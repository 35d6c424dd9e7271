"""Test is read once, by evaluate (DESIGN.md, "Evaluation protocol"): every other stage after
split (tokenizer, encode, pretrain, finetune, register) runs through the stage runner under a
watch on every file that holds test rows, and opens none of them. The classifier is audited
with its word vectors and its n-gram teacher's distillation rows (tiny profile on IMDB), the
causal language model with its pretraining (tiny-lm).

What holds test rows after split: the split's test file, and everything the rows were cut
from (the source files, data/raw, data/interim/clean, data/quarantine: a language-model
corpus's test is the tail of its train file). encode writes no test split.

Two instruments, as neither sees every open alone:
- inotify (the kernel) reports every open of a watched file, native code's included: pyarrow
  reads Parquet and `datasets` its Arrow files in C++, which raise no Python audit events;
- a `sys.addaudithook` hook names the Python code behind each open it sees.
split writes test to a folder of its own that only evaluate declares as an input, so not even
the runner's hashing of a stage's inputs (lineage tags, cache keys) opens it for another stage.
evaluate runs watched too: that the watch sees it open the test file shows the watch was live.

The audited stages run in a subprocess (this file run as a script) so that the hook stays out
of pytest's process, except in the quick test that shows the watch catching a stage made to
read test (there it is inert outside a watch).
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import pytest

from transformer_pl import content_hash
from transformer_pl.data import read_frames, write_frames
from transformer_pl.stages import STAGES, Layout

DATA_PREPARATION = ["ingest", "clean", "validate", "split"]
AFTER_SPLIT = ["tokenizer", "encode", "pretrain", "finetune", "evaluate", "register"]
READS_TEST = "evaluate"  # the one stage after split that may read test
UPSTREAM_OF_SPLIT = ("data/raw", "data/interim/clean", "data/quarantine")
TEST_SPLIT_FILE = f"{Layout.TEST_SPLIT}/test.parquet"
SUBPROCESS_TIMEOUT_SECONDS = 900  # a guard against a hang: the stages take a minute or two

IN_OPEN = 0x20
IN_Q_OVERFLOW = 0x4000
INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
PROJECT_CODE = (str(Path(content_hash.__file__).parent), str(Path(__file__).resolve().parents[1]))
NATIVE = "native code"

_active: SplitWatch | None = None  # the watch the audit hook reports to, if any


def _caller(frame: FrameType | None) -> str:
    """The innermost project frame (transformer_pl or the tests) that led to an open."""
    innermost = None
    while frame is not None:
        filename = frame.f_code.co_filename
        location = f"{Path(filename).name}:{frame.f_lineno}"
        innermost = innermost or location
        if filename.startswith(PROJECT_CODE):
            return location
        frame = frame.f_back
    return innermost or "unknown"


def _audit(event: str, args: tuple[Any, ...]) -> None:
    watch = _active
    if event != "open" or watch is None or watch.stage is None:
        return
    path = args[0]
    if not isinstance(path, str | bytes | os.PathLike):
        return  # an open file descriptor
    path = os.fsdecode(path)
    if os.path.basename(path) not in watch.names:  # cheap before resolving the path
        return
    resolved = os.path.realpath(path)
    if resolved in watch.files:
        watch.python_opens[(watch.stage, resolved)].append(_caller(sys._getframe(1)))


_hook_installed = False


def _install_audit_hook() -> None:
    """Once per process (hooks cannot be removed): inert while no watch is active."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True


class SplitWatch:
    """Which watched files were opened during each `watching(stage)` block, by anything in
    this process or another: inotify sees every open, the audit hook names the Python code
    behind those it sees."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.files = {os.path.realpath(file) for file in files}
        self.names = {os.path.basename(file) for file in self.files}
        self.stage: str | None = None
        self.kernel_opens: set[tuple[str, str]] = set()
        self.python_opens: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = -1
        self._watches: dict[int, str] = {}

    def __enter__(self) -> SplitWatch:
        global _active
        assert self.files, "nothing to watch"
        self._fd = self._checked(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        for file in sorted(self.files):
            watch = self._libc.inotify_add_watch(self._fd, os.fsencode(file), IN_OPEN)
            self._watches[self._checked(watch)] = file
        _install_audit_hook()
        _active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        _active = None
        os.close(self._fd)

    @contextmanager
    def watching(self, stage: str) -> Iterator[None]:
        """Opens until the block ends count against `stage`; those before it against none."""
        self._drain(None)
        self.stage = stage
        try:
            yield
        finally:
            self._drain(stage)
            self.stage = None

    def opens(self) -> list[str]:
        """Each file a stage opened, and by what: Python code's locations, else native code."""
        found = []
        for stage, file in sorted(self.kernel_opens):
            by = ", ".join(self.python_opens.get((stage, file), [NATIVE]))
            found.append(f"{stage} opened {file} (by {by})")
        return found

    def _drain(self, stage: str | None) -> None:
        while True:
            try:
                events = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(events):
                watch, mask, _, name_length = INOTIFY_EVENT.unpack_from(events, offset)
                offset += INOTIFY_EVENT.size + name_length
                assert not mask & IN_Q_OVERFLOW, "inotify's queue overflowed: opens were lost"
                if stage is not None and mask & IN_OPEN:
                    self.kernel_opens.add((stage, self._watches[watch]))

    def _checked(self, result: int) -> int:
        if result < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify: {os.strerror(error)}")
        return result


def files_holding_test_rows(root: Path, source: Path) -> list[Path]:
    """The split's test file and every file upstream of split (see the module docstring)."""
    folders = [source, *(root / folder for folder in UPSTREAM_OF_SPLIT)]
    upstream = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    return [root / TEST_SPLIT_FILE, *upstream]


def run_watched(report: Path, watched: list[str], stages: list[str]) -> None:
    """The stages through the runner (as `tpl stage` runs them) in the working directory's
    workspace, each under a `SplitWatch`; what it saw as JSON in `report`."""
    from transformer_pl.params import load_params
    from transformer_pl.stages.runner import run_stage

    params = load_params()
    with SplitWatch(Path(file) for file in watched) as watch:
        for name in stages:
            with watch.watching(name):
                run_stage(STAGES[name], params, Layout())
    report.write_text(json.dumps(watch.opens(), indent=2), encoding="utf-8")


def test_only_evaluate_declares_the_test_split_as_an_input() -> None:
    readers = [spec.name for spec in STAGES.values() if Layout.TEST_SPLIT in spec.deps]
    assert readers == [READS_TEST]
    assert [spec.name for spec in STAGES.values() if Layout.TEST_SPLIT in spec.outs] == ["split"]


# --- the watch, shown working -------------------------------------------------------------


@pytest.fixture
def split_reviews(make_project, reviews_params) -> Path:
    """A project with its split files written (train, val, test; synthetic reviews)."""
    root = make_project(reviews_params)
    frames = {
        split: pd.DataFrame(
            {"text": [f"{split} review {index} good or bad" for index in range(40)]}
        ).assign(label=[0, 1] * 20)
        for split in ("train", "val", "test")
    }
    write_frames({split: frames[split] for split in ("train", "val")}, root / Layout.SPLITS)
    write_frames({"test": frames["test"]}, root / Layout.TEST_SPLIT)
    return root


def test_the_watch_catches_a_stage_made_to_read_test(
    split_reviews: Path, run_stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = split_reviews
    with SplitWatch([root / TEST_SPLIT_FILE]) as watch:
        with watch.watching("tokenizer"):
            run_stages(root, ["tokenizer"])
        assert watch.opens() == []

        # A tokenizer made to train on test too, as it did before the protocol.
        def with_test(folder: Path, splits: Iterable[str] | None = None) -> dict[str, Any]:
            return read_frames(folder, splits) | read_frames(root / Layout.TEST_SPLIT)

        monkeypatch.setattr("transformer_pl.stages.data.read_frames", with_test)
        with watch.watching("tokenizer reading test"):
            run_stages(root, ["tokenizer"])
        with watch.watching("python"):
            (root / TEST_SPLIT_FILE).read_bytes()

    test_file = os.path.realpath(root / TEST_SPLIT_FILE)
    python, tokenizer = watch.opens()
    assert python.startswith(f"python opened {test_file} (by test_split_audit.py:")
    assert tokenizer == f"tokenizer reading test opened {test_file} (by {NATIVE})"  # pyarrow


# --- every stage after split, watched -----------------------------------------------------

WatchPipeline = Callable[[Path, Path], list[str]]


@pytest.fixture
def watch_pipeline(run_stages, tmp_path: Path) -> WatchPipeline:
    """`watch_pipeline(root, source)`: the data preparation in this process, then every stage
    after split in a `python test_split_audit.py` subprocess in the workspace, under a
    `SplitWatch` of the files holding test rows; returns what it saw opened (and whether encode
    wrote a test split)."""

    def run(root: Path, source: Path) -> list[str]:
        run_stages(root, DATA_PREPARATION)
        plan = {
            "report": str(tmp_path / "opens.json"),
            "watched": [str(path) for path in files_holding_test_rows(root, source)],
            "stages": AFTER_SPLIT,
        }
        (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        excluded = {"TPL_PROFILE", "TPL_PARAMS", "TPL_PARENT_RUN_ID", "MLFLOW_TRACKING_URI"}
        env = {key: value for key, value in os.environ.items() if key not in excluded}
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        result = subprocess.run(
            [sys.executable, __file__, str(tmp_path / "plan.json")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_SECONDS,
        )
        assert result.returncode == 0, result.stderr[-6000:]
        opens = json.loads(Path(plan["report"]).read_text(encoding="utf-8"))
        encoded_test = root / Layout.ENCODED / "test"
        return [*opens, f"encode wrote {encoded_test}"] if encoded_test.exists() else opens

    return run


def assert_only_evaluate_read_test(opens: list[str], root: Path) -> None:
    violations = [line for line in opens if not line.startswith(f"{READS_TEST} opened ")]
    assert violations == [], "\n".join(violations)
    # The watch was live: it saw evaluate read the test split.
    test_file = os.path.realpath(root / TEST_SPLIT_FILE)
    assert any(line.startswith(f"{READS_TEST} opened {test_file} ") for line in opens), opens


def read_json(root: Path, relative: str) -> dict[str, Any]:
    return json.loads((root / relative).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_no_classifier_stage_but_evaluate_opens_test(
    make_project, shrink_profile, write_imdb_slice, watch_pipeline, tmp_path: Path
) -> None:
    source = write_imdb_slice(
        tmp_path / "imdb", {"train.csv.gz": 600, "test.csv.gz": 200, "unsup.csv.gz": 300}
    )
    root = make_project(
        shrink_profile(
            "tiny",
            dataset="imdb",
            datasets={"imdb": {"path": str(source)}},
            finetune={"max_epochs": 1},
            tasks={"classify": {"teacher": {"c_grid": [1.0]}}},
            evaluate={"latency_examples": 2},
        )
    )

    opens = watch_pipeline(root, source)

    assert_only_evaluate_read_test(opens, root)
    finetune = read_json(root, "metrics/train/finetune.json")
    assert finetune["teacher"] == "nb_logistic" and finetune["distilled_rows"] > 0
    assert read_json(root, "metrics/train/pretrain.json")["objective"] == "ppmi_svd"
    assert read_json(root, "metrics/register.json")["registered"]


@pytest.mark.slow
def test_no_language_model_stage_but_evaluate_opens_test(
    make_project, shrink_profile, write_shakespeare_slice, watch_pipeline, tmp_path: Path
) -> None:
    source = write_shakespeare_slice(tmp_path / "shakespeare", 2000)
    root = make_project(
        shrink_profile(
            "tiny-lm",
            datasets={"tinyshakespeare": {"path": str(source)}},
            clean={"max_rows_per_split": None},
            validate={"min_words_per_split": 1000},
            tokenizer={"vocab_size": 500},
            # Pretrained, then continued: both training stages read the encoded corpus.
            pretrain={"batch_size": 16, "max_steps": 10, "val_check_interval": 10},
            finetune={"from_pretrained": True, "max_epochs": 1},
            evaluate={"latency_examples": 1},
            tasks={"lm": {"prompts": ["ROMEO:"]}},
            decode={"max_new_tokens": 4},
        )
    )

    opens = watch_pipeline(root, source)

    assert_only_evaluate_read_test(opens, root)
    assert read_json(root, "metrics/train/pretrain.json")["global_step"] == 10
    assert read_json(root, "metrics/register.json")["registered"]


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    run_watched(Path(plan["report"]), plan["watched"], plan["stages"])
