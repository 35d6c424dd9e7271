"""The bundle: what finetune hands to evaluate and the registry, a directory holding

    model.safetensors   the task model's state dict (safetensors: tensors only, no pickles)
    config.json         {"task": <the dataset task>, "model": TransformerConfig.to_dict(),
                         ...the task's fields (tasks/<task>/bundle.py)}
    tokenizer.json      a Hugging Face `tokenizers` file (optional in a training bundle, which
                        names its tokenizer separately; the registered copy always has one)

The task named in config.json decides how the bundle is loaded, evaluated and served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def read_bundle_config(directory: str | Path) -> dict[str, Any]:
    return json.loads(bundle_file(directory, CONFIG_FILE).read_text(encoding="utf-8"))


def bundle_task(directory: str | Path) -> str:
    """The `task` a bundle's config.json declares (which decides how it is loaded and served)."""
    return read_bundle_config(directory)["task"]


def bundle_file(directory: str | Path, name: str) -> Path:
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"bundle file missing: {path}")
    return path


def bundle_tokenizer(directory: str | Path, tokenizer_path: str | Path | None = None) -> Tokenizer:
    """The bundle's tokenizer: its own `tokenizer.json` unless `tokenizer_path` names another."""
    path = Path(tokenizer_path) if tokenizer_path else Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer not found: {path}")
    return Tokenizer.from_file(str(path))
