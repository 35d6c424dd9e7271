"""What every registered model shares as a served pyfunc: a DataFrame with a `text` column in,
a row per text out, and requests bounded by the limits registered with the model.

The registered model is a pyfunc logged as code (MLflow 3 refuses to unpickle models by
default): MLflow runs a three-line entry file that instantiates the task's class (its
`predict.py`), and the `transformer_pl` package travels with the model as `code_paths`, so a
served model imports the code it was registered with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from tokenizers import Tokenizer

from transformer_pl.params import ServeParams

TEXT_COLUMN = "text"
BUNDLE_ARTIFACT = "bundle"  # the logged model's artifact holding the bundle
SERVING_FILE = "serving.json"  # in a registered bundle: the request limits (ServeParams)
PREDICT_BATCH_SIZE = 32


class BundleModel(mlflow.pyfunc.PythonModel):
    """A pyfunc over a registered bundle: a DataFrame with a `text` column in, a row per text
    out. Subclasses name the bundle loader and answer the texts. A request beyond the bundle's
    serving limits (`serving.json`; ServeParams' defaults for a bundle registered without one)
    is refused with an error naming the limit, which the scoring server answers with a 400."""

    load_bundle: ClassVar[Callable[[str], tuple[Any, Tokenizer, Any]]]

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        directory = context.artifacts[BUNDLE_ARTIFACT]
        self.model, self.tokenizer, self.config = self.load_bundle(directory)
        limits = Path(directory) / SERVING_FILE
        self.limits = (
            ServeParams.model_validate_json(limits.read_text(encoding="utf-8"))
            if limits.is_file()
            else ServeParams()
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        texts = model_input[TEXT_COLUMN].astype(str).tolist()
        self.check_limits(texts)
        return self.answer(texts, params or {})

    def check_limits(self, texts: list[str]) -> None:
        """Refuse more rows, or a longer text, than the serving limits allow."""
        if len(texts) > self.limits.max_rows:
            raise refused(
                f"{len(texts)} rows in one request; at most {self.limits.max_rows}", "max_rows"
            )
        longest = max((len(text) for text in texts), default=0)
        if longest > self.limits.max_text_chars:
            raise refused(
                f"a text of {longest} characters; at most {self.limits.max_text_chars}",
                "max_text_chars",
            )

    def answer(self, texts: list[str], params: dict[str, Any]) -> pd.DataFrame:
        raise NotImplementedError


def refused(what: str, limit: str) -> MlflowException:
    """A request beyond a serving limit: INVALID_PARAMETER_VALUE, which serves as a 400."""
    return MlflowException(
        f"request refused: {what} (serve.{limit}, registered with the model)",
        error_code=INVALID_PARAMETER_VALUE,
    )
