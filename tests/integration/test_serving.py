"""The registered champion served over HTTP, by `mlflow models serve` (in this environment,
`--env-manager local`) and by `tpl serve` (MLflow's scoring app behind a byte cap): each starts
from the registry alone, imports the logged code and answers /invocations with the same
predictions as the model loaded in process, and refuses requests beyond the registered limits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from transformer_pl.model import SequenceClassifier, TransformerConfig
from transformer_pl.params import ServeParams
from transformer_pl.promotion import registration_fingerprint
from transformer_pl.registry import load_champion, register_model
from transformer_pl.tasks.classify.bundle import save_classifier_bundle

MODEL_NAME = "served-classifier"
LABEL_NAMES = ["negative", "positive"]
SENTENCES = ["a wonderful, moving film", "a dull and lifeless plot", "fine, nothing special"]
STARTUP_TIMEOUT_S = 120
OFFLINE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
LIMITS = ServeParams(max_rows=16, max_text_chars=10_000, max_request_bytes=2_000_000)
SERVERS = {
    "mlflow": (sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local"),
    "tpl": (sys.executable, "-m", "transformer_pl.cli", "serve"),
}


def write_tokenizer(path: Path) -> Path:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        SENTENCES,
        trainers.WordPieceTrainer(
            vocab_size=100, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        ),
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite store holding one registered champion; MLflow's globals restored afterwards."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root}/mlflow.db"
    tokenizer_path = write_tokenizer(root / "tokenizer.json")
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=Tokenizer.from_file(str(tokenizer_path)).get_vocab_size(),
        d_model=32,
        n_heads=2,
        n_layers=1,
        d_ff=64,
        max_len=32,
    )
    classifier = SequenceClassifier(config, num_labels=len(LABEL_NAMES))
    bundle = save_classifier_bundle(
        classifier, root / "bundle", label_names=LABEL_NAMES, max_length=16
    )
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE_ENV.items():
            patch.setenv(key, value)
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        try:
            experiment_id = mlflow.create_experiment(
                "serving", artifact_location=(root / "art").as_uri()
            )
            with mlflow.start_run(experiment_id=experiment_id):
                register_model(
                    bundle,
                    tokenizer_path,
                    model_name=MODEL_NAME,
                    metrics={"val_accuracy": 0.5},
                    tags={"git_commit": "abc123"},
                    metric_key="val_accuracy",
                    champion_margin=0.0,
                    fingerprint=registration_fingerprint("abc123", {}, {}),
                    evaluation_data="val",
                    serving_limits=LIMITS,
                )
            yield uri
        finally:
            mlflow.set_tracking_uri(None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module", params=list(SERVERS))
def server_url(
    request: pytest.FixtureRequest, tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The champion served by `mlflow models serve`, then by `tpl serve`."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    served = {"mlflow": ("-m", f"models:/{MODEL_NAME}@champion"), "tpl": ("--model", MODEL_NAME)}
    command = [
        *SERVERS[request.param],
        *served[request.param],
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    # The server execs `uvicorn` by name: this interpreter's bin folder must come first on PATH,
    # as in an activated virtual environment.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, **OFFLINE_ENV, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    with log_path.open("wb") as log:
        # A session of its own: the server's worker processes die with it in teardown.
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _is_up(f"{url}/ping"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"model server did not come up:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:  # the whole group has already exited
        process.wait()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _is_up(ping_url: str) -> bool:
    try:
        with urllib.request.urlopen(ping_url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def test_served_champion_answers_invocations_like_the_loaded_model(server_url: str) -> None:
    payload = {"dataframe_records": [{"text": text} for text in SENTENCES]}
    request = urllib.request.Request(
        f"{server_url}/invocations",
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        served = pd.DataFrame(json.load(response)["predictions"])

    expected = load_champion(MODEL_NAME).predict(pd.DataFrame({"text": SENTENCES}))
    assert list(served.columns) == list(expected.columns)
    assert served["label"].tolist() == expected["label"].tolist()
    assert set(served["label"]) <= set(LABEL_NAMES)
    torch.testing.assert_close(
        torch.tensor(served.filter(like="probability_").to_numpy()),
        torch.tensor(expected.filter(like="probability_").to_numpy()),
        rtol=1e-5,
        atol=1e-6,
    )


def test_served_champion_rejects_input_without_a_text_column(server_url: str) -> None:
    error = invoke(server_url, [{"sentence": "no text column"}])
    assert error.code == 400
    assert "text" in error.read().decode("utf-8")


def invoke(server_url: str, records: list[dict[str, str]]) -> urllib.error.HTTPError:
    """POST the records; the HTTP error the server answers with (the test expects one)."""
    request = urllib.request.Request(
        f"{server_url}/invocations",
        data=json.dumps({"dataframe_records": records}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    return error.value


@pytest.mark.parametrize(
    ("records", "limit"),
    [
        ([{"text": "word " * 200_000}], "max_text_chars"),
        ([{"text": "fine"}] * (LIMITS.max_rows + 1), "max_rows"),
    ],
    ids=["a-million-characters", "too-many-rows"],
)
def test_an_oversized_request_gets_a_400_naming_the_limit_and_the_server_stays_up(
    server_url: str, records: list[dict[str, str]], limit: str
) -> None:
    error = invoke(server_url, records)
    assert error.code == 400
    assert f"serve.{limit}" in error.read().decode("utf-8")
    started = time.monotonic()
    assert _is_up(f"{server_url}/ping") and time.monotonic() - started < 1.0


@pytest.mark.parametrize("server_url", ["tpl"], indirect=True)
def test_tpl_serve_answers_a_body_over_its_byte_cap_with_a_413_and_stays_up(
    server_url: str,
) -> None:
    error = invoke(server_url, [{"text": "word " * 100_000}] * 5)  # 2.5 MB
    assert error.code == 413
    assert "(serve.max_request_bytes)" in error.read().decode("utf-8")
    started = time.monotonic()
    assert _is_up(f"{server_url}/ping") and time.monotonic() - started < 1.0


@pytest.mark.parametrize("server_url", ["tpl"], indirect=True)
def test_tpl_serve_errors_name_the_problem_without_echoing_the_request(server_url: str) -> None:
    error = invoke(server_url, [{"text": "my private text"}] * (LIMITS.max_rows + 1))
    assert error.code == 400
    answer = json.loads(error.read())
    assert "stack_trace" not in answer and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"] == (
        f"request refused: {LIMITS.max_rows + 1} rows in one request; at most "
        f"{LIMITS.max_rows} (serve.max_rows, registered with the model)"
    )
