"""One set of defaults: every key params.yaml sets (its top level, without profiles) holds the
schema's default, so the schema and the file can never drift apart. A key params.yaml leaves out
has the schema's default as its one value; a field without a default (datasets) is params.yaml's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from transformer_pl.params import Params, Section, load_params

PARAMS_FILE = Path(__file__).resolve().parents[2] / "params.yaml"


def _field(section: type[BaseModel], key: str) -> tuple[str, FieldInfo]:
    """The attribute name and field of `section` that the params key `key` sets (an alias or
    the name itself)."""
    for name, field in section.model_fields.items():
        if key in (name, field.alias):
            return name, field
    raise KeyError(f"{section.__name__} has no field {key!r}")


def _subsection(field: FieldInfo) -> type[Section] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def set_keys(
    raw: Mapping[str, Any], section: type[BaseModel] = Params, prefix: str = ""
) -> Iterator[tuple[str, tuple[str, ...], FieldInfo]]:
    """(dotted key, attribute path, schema field) of each value `raw` sets, nested sections
    walked into; a field without a default is yielded, not walked into."""
    for key, value in raw.items():
        name, field = _field(section, key)
        subsection = _subsection(field)
        if subsection is not None and isinstance(value, Mapping) and not field.is_required():
            for dotted, path, leaf in set_keys(value, subsection, f"{prefix}{key}."):
                yield dotted, (name, *path), leaf
        else:
            yield f"{prefix}{key}", (name,), field


def _value(params: Params, path: tuple[str, ...]) -> Any:
    value: Any = params
    for name in path:
        value = getattr(value, name)
    return value


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    return {key: value for key, value in loaded.items() if key != "profiles"}


def test_every_key_params_yaml_sets_holds_the_schema_default(raw: dict[str, Any]) -> None:
    params = load_params(PARAMS_FILE, profile="default")
    drifted = [
        f"{dotted}: params.yaml {_value(params, path)!r}, schema {field.get_default()!r}"
        for dotted, path, field in set_keys(raw)
        if not field.is_required()
        and _value(params, path) != field.get_default(call_default_factory=True)
    ]
    assert not drifted, "params.yaml and the schema disagree:\n" + "\n".join(drifted)


def test_a_section_default_is_its_class_defaults(raw: dict[str, Any]) -> None:
    """`optim: OptimParams = OptimParams(learning_rate=...)` would be a second default: it
    applies when the section is left out, the class's when the section is given in part."""
    sections: list[type[BaseModel]] = [Params]
    seen = []
    while sections:
        section = sections.pop()
        for name, field in section.model_fields.items():
            subsection = _subsection(field)
            if subsection is None:
                continue
            sections.append(subsection)
            if not field.is_required() and field.get_default() != subsection():
                seen.append(f"{section.__name__}.{name}")
    assert not seen, f"section defaults other than their class's: {seen}"


def test_the_walk_sees_every_section(raw: dict[str, Any]) -> None:
    keys = {dotted for dotted, _, _ in set_keys(raw)}
    assert {"model.n_layers", "pretrain.optim.learning_rate", "validate.min_rows_per_split"} <= keys
    assert "datasets" in keys and not any(key.startswith("datasets.") for key in keys)
