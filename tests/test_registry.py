from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from obliviate.registry import METHODS, Registry, coerce_params


@dataclass(frozen=True)
class Toy:
    lr: float = 0.1  # learning rate
    epochs: int = 2  # passes
    flag: bool = False  # a switch
    mode: Literal["a", "b"] = "a"  # one of two
    layers: tuple[int, ...] = (1, 2)  # a list
    cap: int | None = None  # optional


def test_coerce_parses_cli_strings():
    out = coerce_params(
        Toy,
        {"lr": "1e-3", "epochs": "5", "flag": "true", "mode": "b", "layers": "3,4", "cap": "none"},
        what="toy",
    )
    assert out == {
        "lr": 1e-3,
        "epochs": 5,
        "flag": True,
        "mode": "b",
        "layers": (3, 4),
        "cap": None,
    }
    assert coerce_params(Toy, {"cap": "7"}, what="toy") == {"cap": 7}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"lrr": 1}, "Did you mean 'lr'"),
        ({"lr": "fast"}, "expected a number"),
        ({"epochs": "2.5"}, "expected an integer"),
        ({"flag": "maybe"}, "true/false"),
        ({"mode": "c"}, "not one of"),
    ],
)
def test_coerce_rejects_bad_values(params, message):
    with pytest.raises((ValueError, TypeError), match=message):
        coerce_params(Toy, params, what="toy")


@dataclass(frozen=True)
class Holder:
    toys: tuple[Toy, ...] = (Toy(),)  # nested option tables


def test_coerce_builds_nested_dataclasses_from_tables():
    # how a TOML config or a JSON spec writes finetune-recovery's configs
    out = coerce_params(Holder, {"toys": [{"lr": "1e-3", "mode": "b"}, {}]}, what="holder")
    assert out == {"toys": (Toy(lr=1e-3, mode="b"), Toy())}
    assert coerce_params(Holder, {"toys": [Toy(epochs=3)]}, what="holder")["toys"][0].epochs == 3
    with pytest.raises(ValueError, match=r"toys: an entry \(Toy\) has no hyperparameter 'lrr'"):
        coerce_params(Holder, {"toys": [{"lrr": 1}]}, what="holder")
    with pytest.raises(ValueError, match="not one of"):
        coerce_params(Holder, {"toys": [{"mode": "z"}]}, what="holder")


def test_registry_did_you_mean_and_describe():
    reg: Registry = Registry("thing")
    reg.register("toy-one")(Toy)
    with pytest.raises(ValueError, match="Did you mean 'toy-one'"):
        reg.get("toy-on")
    rows = {r[0]: r for r in reg.describe("toy-one")}
    assert rows["lr"][2] == 0.1 and rows["lr"][3] == "learning rate"
    assert reg.build("toy-one", {"epochs": "3"}) == Toy(epochs=3)


def test_registry_rejects_bad_keys_and_double_registration():
    reg: Registry = Registry("thing")
    with pytest.raises(ValueError, match="lowercase with hyphens"):
        reg.register("Bad_Key")
    reg.register("x")(Toy)

    @dataclass(frozen=True)
    class Other:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x")(Other)


def test_lazy_entry_imports_on_first_use_and_names_the_extra():
    reg: Registry = Registry("thing")
    reg.lazy("json-dumps", "json:dumps")
    import json

    assert reg.get("json-dumps") is json.dumps
    reg.lazy("needs-extra", "obliviate_missing_pkg.sub:thing")
    with pytest.raises(ImportError, match="pip install"):
        reg.get("needs-extra")


def test_discovery_finds_the_core_methods():
    assert {"finetune", "grad-ascent"} <= set(METHODS.names())


def test_modified_entropy_matches_song_and_mittal():
    import numpy as np

    from obliviate.audits.mia_efficacy import _features

    p = np.array([[0.7, 0.2, 0.1]])
    logits = np.log(p)
    want = -(0.3 * np.log(0.7) + 0.2 * np.log(0.8) + 0.1 * np.log(0.9))
    assert np.isclose(_features(logits, np.array([0]), "m_entropy")[0, 0], want)
