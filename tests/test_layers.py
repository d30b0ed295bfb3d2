"""The layers of DESIGN.md, checked on the source: no back edges, no global torch state in the library."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import eclip

SRC = Path(eclip.__file__).parent


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package,forbidden", [
    ("evaluation", "eclip.report"),   # report reads records; evaluation never imports it
    ("report", "eclip.evaluation"),
    ("metrics", "eclip.evaluation"),
    ("metrics", "eclip.models"),      # metrics compare maps with masks; running a model is the runner's job
    ("methods", "eclip.evaluation"),
    ("models", "eclip.methods"),
])
def test_no_back_edges(package, forbidden):
    offenders = [f"{p.relative_to(SRC)} imports {m}" for p in modules(package) for m in imports(p)
                 if m == forbidden or m.startswith(forbidden + ".")]
    assert not offenders, offenders


GLOBAL_STATE = {("torch", "set_num_threads"), ("torch", "manual_seed"), ("torch", "set_num_interop_threads"),
                ("random", "seed"), ("np.random", "seed"), ("torch.cuda", "manual_seed_all")}


def global_state_calls(source: str) -> list[str]:
    """'line owner.function' of every call that changes process-wide random or thread state."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = ast.unparse(node.func.value)
            if (owner, node.func.attr) in GLOBAL_STATE:
                calls.append(f"{node.lineno} {owner}.{node.func.attr}")
    return calls


#: Training seeds the process in its loop (train/ is being reworked on its own; to move into the CLI).
KNOWN = {"train/loop.py", "train/recipe.py"}  # recipe: a from-scratch network seeded inside fork_rng (restored after)


def test_only_the_cli_sets_global_torch_state():
    offenders = [f"{p.relative_to(SRC)}:{c}" for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts
                 and str(p.relative_to(SRC)) not in KNOWN for c in global_state_calls(p.read_text())]
    assert not offenders, offenders


def test_the_check_tells_a_global_seed_from_a_generator():
    source = "import torch\ntorch.manual_seed(0)\ng = torch.Generator().manual_seed(0)\ntorch.set_num_threads(1)\n"
    assert global_state_calls(source) == ["2 torch.manual_seed", "4 torch.set_num_threads"]


def test_methods_reach_resnet_internals_only_through_the_adapter():
    """No method touches open_clip's attention pool or image tower directly (`model.pool.v_proj`, `.visual`)."""
    offenders = []
    for path in modules("methods"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"pool", "visual", "attnpool", "vision_model"}:
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders


def private_model_members(source: str) -> list[str]:
    """'line model._name' of every private member read on a variable called `model` (the adapter)."""
    return [f"{node.lineno} model.{node.attr}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "model"
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_methods_use_only_the_adapters_public_members():
    """The DenseCLIP protocol is the adapters' public members; a method that reads `model._x` depends on one adapter's insides."""
    offenders = [f"{p.relative_to(SRC)}:{m}" for p in modules("methods") for m in private_model_members(p.read_text())]
    assert not offenders, offenders
    assert private_model_members("x = model._pos_embedding()\ny = model.pos_embedding\nz = model.__class__\n") == \
        ["1 model._pos_embedding"]


def test_methods_keep_no_result_of_a_call():
    """Extra outputs travel on `Maps.extra`: no method class assigns to itself (`self.last = ...`); its options are its fields."""
    offenders = []
    for path in modules("methods"):
        classes = [c for c in ast.walk(ast.parse(path.read_text())) if isinstance(c, ast.ClassDef)
                   and any(ast.unparse(base).endswith("Method") for base in c.bases)]
        for node in (n for c in classes for n in ast.walk(c)):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                        offenders.append(f"{path.relative_to(SRC)}:{node.lineno} self.{target.attr}")
    assert not offenders, offenders


def test_report_takes_each_direction_from_its_metric():
    from eclip.metrics import Deletion, Insertion, PointingGame, ScoreContrast, ThresholdIoU
    from eclip.report.tables import METRICS

    declared = {k: up for m in (ThresholdIoU, ScoreContrast, PointingGame, Deletion, Insertion) for k, up in m.directions.items()}
    assert {k: up for k, (_, up) in METRICS.items()} == {k: declared[k] for k in METRICS}
    assert METRICS["inverted_rate"][1] is False and METRICS["deletion_auc"][1] is False and METRICS["msc"][1] is True
    assert ScoreContrast.higher_is_better and not Deletion.higher_is_better and Insertion.higher_is_better
