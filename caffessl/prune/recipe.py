"""Pruning recipes in YAML: the net, the data, the starting weights and an ordered list of steps.

    name: han_lenet5
    net: models/lenet/lenet_train_test.prototxt       # paths are relative to the current directory
    weights: ../shared/models/lenet/lenet_iter_10000.caffemodel
    data: ../shared/data/mnist                         # MNIST IDX files (converted to the nets' LMDBs)
    test_iters: 100
    steps:
      - test: {label: dense}
      - prune: {policy: magnitude, amount: 1.0, rounds: 3, solver: solvers/prune/lenet_retrain_solver.prototxt}
      - slim: {}
      - test: {}
      - time: {layers: [conv1, conv2]}

Every key is checked when the file is read: an unknown top-level key, step or step key is a RecipeError that
names the file and line (pyyaml's node marks)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import RecipeError
from ..io.yaml_file import compose_file

TOP_KEYS = {"name", "description", "net", "weights", "data", "workdir", "test_iters", "steps"}
_TRAIN = {"solver", "net", "weights", "overrides", "label"}
STEP_KEYS = {
    "train": _TRAIN,
    "finetune": _TRAIN,
    "prune": {"policy", "amount", "layers", "min_channels", "round_to", "clamp", "depth", "rounds", "solver",
              "overrides", "insert_masks", "mask_decay_mult", "label"},
    "slim": {"label", "depth"},
    "test": {"label", "iters"},
    "time": {"label", "reps", "batch", "layers"},
    "export": {"label", "format"},
}
REQUIRED = {"train": ("solver",), "finetune": ("solver",)}


@dataclass
class Step:
    index: int
    kind: str
    args: dict
    line: int

    @property
    def label(self) -> str:
        return str(self.args.get("label") or self.kind)

    @property
    def stem(self) -> str:
        return f"{self.index:02d}_{self.kind}"


@dataclass
class Recipe:
    path: str
    name: str
    net: str
    steps: list
    weights: str | None = None
    data: str | None = None
    workdir: str | None = None
    test_iters: int = 100
    description: str = ""
    lines: dict = field(default_factory=dict)


def _plain(node):
    """A yaml node -> Python values (mappings keep their order)."""
    import yaml
    if isinstance(node, yaml.MappingNode):
        return {_plain(k): _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v) for v in node.value]
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _where(path, node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(path, node, what):
    import yaml
    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{_where(path, node)}: {what} must be a mapping (key: value)")
    return node.value


def load(path) -> Recipe:
    """Read and check a recipe file."""
    import yaml
    path = os.fspath(path)
    _, root = compose_file(path, RecipeError, "recipe")
    top, lines, steps_node = {}, {}, None
    for k, v in _mapping(path, root, "a recipe"):
        if k.value not in TOP_KEYS:
            raise RecipeError(f"{_where(path, k)}: unknown key '{k.value}' (keys: {', '.join(sorted(TOP_KEYS))})")
        lines[k.value] = k.start_mark.line + 1
        if k.value == "steps":
            steps_node = v
        else:
            top[k.value] = _plain(v)
    for req in ("net", "steps"):
        if req not in lines:
            raise RecipeError(f"{path}: the recipe needs '{req}'")
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise RecipeError(f"{_where(path, steps_node)}: 'steps' must be a non-empty list")
    steps = []
    for i, sn in enumerate(steps_node.value):
        items = _mapping(path, sn, "a step")
        if len(items) != 1:
            raise RecipeError(f"{_where(path, sn)}: a step is one 'kind: {{...}}' entry, got {len(items)} keys")
        kn, an = items[0]
        kind = kn.value
        if kind not in STEP_KEYS:
            raise RecipeError(f"{_where(path, kn)}: unknown step '{kind}' (steps: {', '.join(STEP_KEYS)})")
        args = {}
        if not (an.tag.endswith("null") and an.value in ("", "~", "null")):
            for k, v in _mapping(path, an, f"step '{kind}'"):
                if k.value not in STEP_KEYS[kind]:
                    raise RecipeError(f"{_where(path, k)}: unknown key '{k.value}' in step '{kind}' (keys: "
                                      f"{', '.join(sorted(STEP_KEYS[kind]))})")
                args[k.value] = _plain(v)
        for req in REQUIRED.get(kind, ()):
            if req not in args:
                raise RecipeError(f"{_where(path, kn)}: step '{kind}' needs '{req}'")
        steps.append(Step(i, kind, args, kn.start_mark.line + 1))
    name = str(top.get("name") or os.path.splitext(os.path.basename(path))[0])
    try:
        test_iters = int(top.get("test_iters", 100))
    except (TypeError, ValueError):
        raise RecipeError(f"{path}:{lines['test_iters']}: test_iters must be an integer") from None
    return Recipe(path, name, str(top["net"]), steps, top.get("weights"), top.get("data"), top.get("workdir"),
                  test_iters, str(top.get("description") or ""), lines)
