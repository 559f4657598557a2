"""The one registry of solvers, variants and the sparsity grammar, and everything derived from it: a solver
registered once is accepted by the config schema, offered by the CLI, matched by the rules' wildcards and run by
the layer-wise driver."""

from __future__ import annotations

import inspect
import re

import jsonschema
import pytest
import torch

from iobs import registry
from iobs.config import load_config, load_schema, validate_config
from iobs.errors import ConfigError
from iobs.prune.solvers import GROUP_SOLVERS, SOLVERS, solve
from iobs.prune.solvers.common import SolveResult, checked_inputs, finish
from iobs.targets import SparsitySpec, SparsitySpecError
from iobs.prune.sparsity import lowest_scores_mask

from tests.conftest import REPO


def keep_first_prune(weight: torch.Tensor, hessian: torch.Tensor, spec: SparsitySpec, *,
                     reverse: bool = False) -> SolveResult:
    """A stand-in solver for the registration tests: prunes the last inputs of every row (first with reverse)."""
    w, _ = checked_inputs(weight, hessian, spec)
    scores = torch.arange(w.shape[1], dtype=torch.float32).expand_as(w)
    keep = lowest_scores_mask(scores if reverse else -scores, spec, "row")
    return finish(weight, w, keep, hessian)


@pytest.fixture
def extra_solver(monkeypatch):
    """Registers keep_first_prune as 'keep_first' for one test (module name as pytest imported this file)."""
    entry = registry.SolverEntry("keep_first", f"{__name__}:keep_first_prune", "keep first", "tab:olive",
                                 options={"reverse": {"type": "boolean"}})
    monkeypatch.setitem(registry.SOLVERS, entry.name, entry)
    return entry


def _config(**sections) -> dict:
    """The embedded default config with some sections replaced, validated."""
    config = load_config(REPO / "config.yaml")
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return validate_config(config)


def _schema_node(schema: dict, *path: str) -> dict:
    node = schema
    for key in path:
        node = node["properties"][key] if key in node.get("properties", {}) else node[key]
    return node


def test_schema_enums_come_from_the_registry():
    schema = load_schema()
    pruning = _schema_node(schema, "pruning")
    assert pruning["properties"]["methods"]["items"]["enum"] == list(registry.SOLVERS)
    assert set(pruning["properties"]["options"]["properties"]) == set(registry.SOLVERS)
    iterative = _schema_node(schema, "iterative")
    assert iterative["properties"]["solver"]["enum"] == ["sparsegpt", "obc"]
    assert registry.mask_keeping_solvers() == ("sparsegpt",)
    assert iterative["properties"]["variants"]["items"]["enum"] == list(registry.VARIANTS)
    mmlu = _schema_node(schema, "mmlu")
    assert set(mmlu["properties"]["methods"]["items"]["enum"]) >= {"dense", "dense_ft_dense", *registry.VARIANTS}
    assert schema["$defs"]["sparsity"]["pattern"] == f"^({registry.SPARSITY_PATTERN})$"
    assert "x-registry" not in repr(schema)


def test_registered_options_are_the_solvers_keyword_options():
    """What the schema lets a config set must be what the function accepts (a typo'd option fails validation)."""
    for name, entry in registry.SOLVERS.items():
        keyword_only = {p.name for p in inspect.signature(entry.load()).parameters.values()
                        if p.kind is p.KEYWORD_ONLY}
        assert set(entry.options) <= keyword_only, name
        assert ("mask" in keyword_only) == entry.keeps_mask, f"{name}: keeps_mask disagrees with its signature"
    assert set(GROUP_SOLVERS) == {"sparsegpt"}


def test_a_registered_solver_reaches_schema_cli_rules_and_driver(extra_solver, make_tiny_model, calibration_ids):
    from iobs.cli.parser import build_parser
    from iobs.prune.driver import prune_model

    config = _config(pruning={"methods": ["keep_first", "sparsegpt"],
                                                           "options": {"keep_first": {"reverse": True}}})
    assert config["pruning"]["methods"] == ["keep_first", "sparsegpt"]
    with pytest.raises(ConfigError, match="reverse"):
        _config(pruning={"options": {"keep_first": {"reverse": "yes"}}})
    assert "keep_first" not in registry.projection_solvers()
    with pytest.raises(ConfigError):  # it takes no mask, so it cannot be I-OBS's projection
        _config(iterative={"solver": "keep_first"})

    # the CLI builds its choices when its parser is built
    parser = build_parser()
    args = parser.parse_args(["prune", "m", "--method", "keep_first", "--sparsity", "0.5", "--out", "o"])
    assert args.method == "keep_first"

    assert re.fullmatch(registry.wildcard(registry.oneshot_methods()), "keep_first")
    assert not re.fullmatch(registry.wildcard(registry.oneshot_methods()), "keep_firstx")

    weight, hessian = torch.randn(4, 8), torch.eye(8)
    result = solve("keep_first", weight, hessian, "0.5")
    assert result.mask[:, :4].all() and not result.mask[:, 4:].any()
    assert SOLVERS["keep_first"] is keep_first_prune

    model = make_tiny_model("llama")
    report = prune_model(model, calibration_ids, "keep_first", "0.5", progress=False)
    assert report.linears and all(abs(linear.sparsity - 0.5) < 1e-6 for linear in report.linears)


def test_fixed_mask_variant_needs_a_solver_that_keeps_masks():
    with pytest.raises(ConfigError, match="iobs_fixed_mask projects onto round 1's mask, which solver obc cannot"):
        _config(iterative={"solver": "obc", "rounds": 3,
                                                        "variants": ["iobs", "iobs_fixed_mask"]})
    _config(iterative={"solver": "obc", "rounds": 3, "variants": ["iobs"]})


def test_registration_refuses_clashes():
    with pytest.raises(ValueError, match="registered already"):
        registry.register_solver(registry.SolverEntry("iobs", "x:y", "x", "k"))
    with pytest.raises(ValueError, match="path part"):
        registry.register_solver(registry.SolverEntry("Bad-Name", "x:y", "x", "k"))


@pytest.mark.parametrize("text", ["0.5", "0.25", "0.875", "2:4", "4:8", "1:3"])
def test_every_sparsity_label_is_in_the_grammar(text):
    spec = SparsitySpec.parse(text)
    assert registry.is_sparsity_text(spec.label)
    assert SparsitySpec.parse(spec.label) == spec
    jsonschema.validate(text, load_schema()["$defs"]["sparsity"])


@pytest.mark.parametrize("text", [".5", "5e-1", "0.5x", "50%"])
def test_text_outside_the_grammar_is_refused_everywhere(text):
    with pytest.raises(SparsitySpecError, match="cannot read sparsity"):
        SparsitySpec.parse(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(text, load_schema()["$defs"]["sparsity"])


def test_variants_that_share_dense_states_are_named_by_their_schedule():
    assert [n for n, e in registry.VARIANTS.items() if e.schedule.sparsity_free_states] == ["dense_ft"]
    assert registry.sparsity_free_variants() == ("dense_ft",) and registry.dense_references() == ("dense_ft_dense",)


@pytest.fixture
def extra_sparsity_free_variant(monkeypatch):
    """Registers a second variant whose projection is not carried ('dense_ft_alt') for one test."""
    entry = registry.VariantEntry(
        "dense_ft_alt", registry.Schedule(project_every_round=False, masked_steps=False, carry_projection=False),
        "dense steps, pruned once", "tab:olive", "stand-in: a second variant with sparsity-free states")
    monkeypatch.setitem(registry.VARIANTS, entry.name, entry)
    return entry


def test_a_sparsity_free_variant_is_classed_with_dense_ft(extra_sparsity_free_variant):
    """The chain grain (one job per model over every sparsity), the dense reference's method name and the model it
    evaluates follow the schedule, not the name dense_ft (workflow/rules/common.smk: chain_variants)."""
    from iobs.pipeline.layout import Layout

    assert registry.sparsity_free_variants() == ("dense_ft", "dense_ft_alt")
    assert registry.sparsity_free_variants(["iobs", "dense_ft_alt", "sparsegpt_ft"]) == ("dense_ft_alt",)
    assert registry.dense_references() == ("dense_ft_dense", "dense_ft_alt_dense")
    assert registry.dense_reference("{variant}") == "{variant}_dense"  # a rule's output pattern
    assert registry.reference_variant("dense_ft_alt_dense") == "dense_ft_alt"
    assert registry.reference_variant("dense_ft_dense") == "dense_ft"
    assert registry.reference_variant("iobs_dense") is None and registry.reference_variant("dense") is None
    assert registry.evaluated_methods()[-2:] == ("dense_ft_dense", "dense_ft_alt_dense")
    assert registry.DENSE_REFERENCE == "dense_ft_dense"  # the report's control stays dense_ft's

    free = registry.wildcard(registry.sparsity_free_variants())
    assert re.fullmatch(free, "dense_ft_alt") and re.fullmatch(free, "dense_ft") and not re.fullmatch(free, "iobs")

    results = Layout("results")
    assert results.evaluated_model("m", "dense_ft_alt_dense", "0.5", 1, "dense") == "dense"
    assert (results.evaluated_model("m", "dense_ft_alt_dense", "0.5", 3, "dense")
            == "results/prune/m/dense_ft_alt/0.5/round2/state")


def test_a_dense_reference_name_cannot_be_registered_twice(monkeypatch):
    with pytest.raises(ValueError, match="registered already"):
        registry.register_solver(registry.SolverEntry("dense_ft_dense", "x:y", "x", "k"))
    sparsity_free = registry.Schedule(project_every_round=True, masked_steps=False, carry_projection=False)
    with pytest.raises(ValueError, match="registered already"):
        registry.register_variant(registry.VariantEntry("dense_ft_dense", sparsity_free, "x", "k", "x"))
    monkeypatch.setitem(registry.SOLVERS, "keep_dense", registry.SolverEntry("keep_dense", "x:y", "x", "k"))
    with pytest.raises(ValueError, match="the dense reference of keep"):  # keep's dense states would be keep_dense
        registry.register_variant(registry.VariantEntry("keep", sparsity_free, "x", "k", "x"))
    assert "keep" not in registry.VARIANTS
