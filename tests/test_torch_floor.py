"""caffessl runs on any torch >= 2.4 (issue 19): no torch API newer than the floor is used without a fallback.

torch 2.4 itself cannot be installed on the offline CI machine (only the pinned 2.13.0 and a 2.14.1 wheel are
on disk), so the floor is enforced statically: an AST scan of the package (and bench/) for the attribute paths,
imports, keyword arguments and changed defaults listed below, each with the torch release that added or
changed it. A use passes only inside a guard that works on 2.4 -- the body of an ``if`` (or the right of an
``and``) testing ``hasattr``/``getattr`` on one of the path's names or a torch version, the body of a ``try``
whose handler catches AttributeError / ImportError / TypeError (or broader), a three-argument ``getattr(...,
default)`` -- or at a site listed in ALLOWED_SITES with its reason. The self-tests inject forbidden uses and
check that the scan catches them.
"""
from __future__ import annotations

import ast
import importlib
import re
import shutil
from pathlib import Path

import pytest

from tests.golden import REPO

FLOOR = (2, 4)

# Attribute paths (a use of the path or of anything under it) added after torch 2.4.0: path -> first release.
NEWER_THAN_FLOOR = {
    "torch.accelerator": "2.6",                                   # device-agnostic runtime API
    "torch.distributed.get_default_backend_for_device": "2.6",
    "torch.distributed.tensor": "2.5",                            # public DTensor (was torch.distributed._tensor)
    "torch.distributed.fsdp.fully_shard": "2.6",                  # FSDP2 as a public API
    "torch.serialization.safe_globals": "2.5",
    "torch.serialization.get_unsafe_globals_in_checkpoint": "2.5",
    "torch.serialization.skip_data": "2.6",
    "torch.nn.attention.flex_attention": "2.5",
    "torch.nn.attention.varlen": "2.10",
    "torch.nn.utils.get_total_norm": "2.6",
    "torch.nn.utils.clip_grads_with_norm_": "2.6",
    "torch.compiler.set_stance": "2.6",
    "torch.compiler.save_cache_artifacts": "2.7",
    "torch.compiler.load_cache_artifacts": "2.7",
    "torch.compiler.nested_compile_region": "2.8",
    "torch.library.triton_op": "2.6",
    "torch.library.wrap_triton": "2.6",
    "torch._dynamo.error_on_graph_break": "2.9",
    "torch.export.Dim.AUTO": "2.6",
    "torch.cuda.MemPool": "2.5",
    "torch.float8_e8m0fnu": "2.7",
    "torch.float4_e2m1fn_x2": "2.8",
    "torch.optim.Muon": "2.9",
}

# Keyword arguments added after 2.4 to functions that 2.4 has: (function path, keyword) -> first release.
NEWER_KEYWORDS = {
    ("torch.nn.functional.scaled_dot_product_attention", "enable_gqa"): "2.5",
}

# Defaults that changed after 2.4: a call must pass the keyword explicitly, so 2.4 and later releases agree.
CHANGED_DEFAULTS = {
    ("torch.load", "weights_only"): "2.6 (default False -> True)",
}

# Checked by the audit and present in torch <= 2.4 (what the package uses that a reader might suspect):
# recorded here so the next audit need not redo them; not scanned.
AUDITED_PRESENT_AT_FLOOR = {
    "torch._foreach_copy_": "2.1",
    "torch._foreach_add_/_mul_/_sub_/_div_/_sqrt(_)/_addcmul_": "<= 2.0",
    "torch.ops.aten.convolution.out": "1.13 (autogen out= overload)",
    "torch.ops.mkldnn._linear_pointwise": "2.0 (guarded by hasattr in conv_modes/matmul.py)",
    "torch.sparse_csr_tensor / Tensor.to_sparse_csr / crow_indices / col_indices / torch.sparse.mm": "<= 1.13",
    "Tensor.untyped_storage": "2.0",
    "torch.sort(stable=...)": "1.9",
    "torch.nn.functional.interpolate(antialias=...)": "1.11",
    "torch.autograd.backward(inputs=...)": "1.8",
    "torch.distributed.init_process_group(timeout=timedelta) / all_gather_object": "<= 1.13",
    "torch.cuda.get_device_properties(...).L2_cache_size etc.": "read through hasattr in commands/device_query.py",
}

# (path relative to the scanned root, denied path) -> why the use is acceptable there.
ALLOWED_SITES: dict[tuple[str, str], str] = {}

_CATCHES = {"AttributeError", "ImportError", "ModuleNotFoundError", "TypeError", "Exception", "BaseException"}


def _version(s: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"\d+(?:\.\d+)*", s).group(0).split("."))


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _aliases(tree) -> dict[str, str]:
    """Local name -> the torch path it stands for (``import torch.distributed as dist``, ``from torch import
    nn``, ...), over the whole module (function-level imports included)."""
    names = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name == "torch" or a.name.startswith("torch."):
                    if a.asname:
                        names[a.asname] = a.name
                    else:
                        names["torch"] = "torch"
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module and \
                (n.module == "torch" or n.module.startswith("torch.")):
            for a in n.names:
                names[a.asname or a.name] = f"{n.module}.{a.name}"
    return names


def _resolve(node, aliases) -> str | None:
    d = _dotted(node)
    if d is None:
        return None
    head, _, rest = d.partition(".")
    if head not in aliases:
        return None
    return aliases[head] + ("." + rest if rest else "")


def _denied(path: str) -> tuple[str, str] | None:
    """The denylist entry ``path`` falls under (the entry itself or anything inside it)."""
    for entry, version in NEWER_THAN_FLOOR.items():
        if path == entry or path.startswith(entry + "."):
            return entry, version
    return None


def _capability_check(test, names: set[str]) -> bool:
    """``test`` asks whether the API is there: hasattr/getattr naming one of ``names``, or a torch version."""
    for n in ast.walk(test):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr") \
                and len(n.args) >= 2 and isinstance(n.args[1], ast.Constant) and n.args[1].value in names:
            return True
        if isinstance(n, ast.Attribute) and n.attr == "__version__":
            return True
        if isinstance(n, ast.Name) and "torch_version" in n.id.lower():
            return True
    return False


def _within(child, nodes) -> bool:
    return any(child is m for m in nodes)               # ``child`` is a direct child of the statement


def _guarded(node, parents, names: set[str]) -> bool:
    child, p = node, parents.get(node)
    while p is not None:
        if isinstance(p, (ast.If, ast.IfExp, ast.While)) and child is not p.test:
            negated = isinstance(p.test, ast.UnaryOp) and isinstance(p.test.op, ast.Not)
            test = p.test.operand if negated else p.test
            branch = p.orelse if negated else p.body
            branch = branch if isinstance(branch, list) else [branch]
            if _capability_check(test, names) and _within(child, branch):
                return True
        if isinstance(p, ast.BoolOp) and isinstance(p.op, ast.And):
            i = next(k for k, v in enumerate(p.values) if v is child)
            if any(_capability_check(v, names) for v in p.values[:i]):
                return True
        if isinstance(p, ast.Try) and _within(child, p.body):
            for h in p.handlers:
                caught = [] if h.type is None else (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
                if h.type is None or any(isinstance(c, ast.Name) and c.id in _CATCHES for c in caught):
                    return True
        child, p = p, parents.get(p)
    return False


def scan_source(text: str, rel: str = "<string>") -> tuple[list[str], int]:
    """Violations in one module's source, and how many torch references the scan resolved (so that a scan
    that sees nothing cannot pass for a clean one)."""
    tree = ast.parse(text)
    aliases = _aliases(tree)
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    found, seen = [], 0

    def report(node, path, what):
        if (rel, path) in ALLOWED_SITES or (rel, what) in ALLOWED_SITES:
            return
        names = set(path.split("."))
        if not _guarded(node, parents, names):
            found.append(f"{rel}:{node.lineno}: {what}")

    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            full = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [f"{n.module}.{a.name}" for a in n.names] if n.level == 0 and n.module else []
            for path in full:
                hit = _denied(path)
                if hit:
                    report(n, path, f"import of {path} (torch {hit[1]}, newer than the floor)")
        elif isinstance(n, (ast.Attribute, ast.Name)):
            parent = parents.get(n)
            if isinstance(parent, ast.Attribute) and parent.value is n:
                continue                                  # only the longest chain a.b.c counts
            if isinstance(getattr(n, "ctx", None), (ast.Store, ast.Del)):
                continue                                  # a name bound here, e.g. a fallback's
            path = _resolve(n, aliases)
            if path is None:
                continue
            seen += 1
            hit = _denied(path)
            if hit:
                report(n, path, f"{path} (under {hit[0]}: torch {hit[1]}, newer than the floor)")
        if isinstance(n, ast.Call):
            fn = _resolve(n.func, aliases) if not (isinstance(n.func, ast.Name) and n.func.id == "getattr") \
                else None
            if isinstance(n.func, ast.Name) and n.func.id == "getattr" and len(n.args) == 2 and \
                    isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str):
                base = _resolve(n.args[0], aliases)     # getattr(torch, "x") without a default is a plain use
                if base:
                    path = f"{base}.{n.args[1].value}"
                    hit = _denied(path)
                    if hit:
                        report(n, path, f"getattr {path} without a default (torch {hit[1]})")
            if fn is None:
                continue
            given = {k.arg for k in n.keywords if k.arg}
            for (f, kw), version in NEWER_KEYWORDS.items():
                if fn == f and kw in given:
                    report(n, f, f"{f}({kw}=...) (torch {version}, newer than the floor)")
            for (f, kw), change in CHANGED_DEFAULTS.items():
                if fn == f and kw not in given and not any(k.arg is None for k in n.keywords):
                    report(n, f, f"{f} without an explicit {kw}= (its default changed in torch {change})")
    return found, seen


def scan(root: Path) -> tuple[list[str], int]:
    found, seen = [], 0
    for p in sorted(root.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        f, s = scan_source(p.read_text(encoding="utf-8"), f"{root.name}/{p.relative_to(root).as_posix()}")
        found += f
        seen += s
    return found, seen


# ---------------------------------------------------------------------------------------------- the package

@pytest.mark.parametrize("root", ["caffessl", "bench"])
def test_no_torch_api_newer_than_the_floor_without_a_fallback(root):
    found, seen = scan(REPO / root)
    assert found == [], "torch APIs newer than %d.%d used without a fallback:\n" % FLOOR + "\n".join(found)
    assert seen > (400 if root == "caffessl" else 50), seen      # the scan resolved the package's torch uses


def test_setup_py_is_not_scanned_for_nothing():
    found, _ = scan_source((REPO / "setup.py").read_text(encoding="utf-8"), "setup.py")
    assert found == []


def test_the_denylist_is_newer_than_the_floor_and_names_real_apis():
    import torch
    for table in (NEWER_THAN_FLOOR, NEWER_KEYWORDS, CHANGED_DEFAULTS):
        for key, version in table.items():
            assert _version(version) > FLOOR, (key, version)
    installed = _version(torch.__version__)
    for path, version in NEWER_THAN_FLOOR.items():
        if installed < _version(version):
            continue
        parts, obj = path.split("."), None
        for i in range(len(parts), 0, -1):           # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for a in parts[i:]:
                obj = getattr(obj, a)                 # AttributeError: a typo in the denylist
            break
        assert obj is not None, path


def test_the_floor_in_setup_py_and_the_readme():
    """The install pin stays torch==2.13.0 (offline CPU installs; a looser requirement pulls the CUDA build);
    the pinned release is at or above the floor, and the README states both."""
    from packaging.requirements import Requirement
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    reqs = next(ast.literal_eval(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call)
                for k in n.keywords if k.arg == "install_requires")
    torch_req = [Requirement(r) for r in reqs if Requirement(r).name == "torch"]
    assert len(torch_req) == 1, reqs
    specs = list(torch_req[0].specifier)
    assert [(s.operator, s.version) for s in specs] == [("==", "2.13.0")], specs
    lower = [s for s in specs if s.operator in ("==", "===", ">=", ">", "~=")]
    assert lower and all(_version(s.version) >= FLOOR for s in lower), specs
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "torch==2.13.0" in readme
    assert "torch >= 2.4" in readme and "tests/test_torch_floor.py" in readme


# ---------------------------------------------------------------------------------------------- self-tests

@pytest.mark.parametrize("source", [
    "import torch\nd = torch.accelerator.current_accelerator()\n",
    "import torch\nif torch.accelerator.is_available():\n    pass\n",
    "import torch.distributed as dist\nb = dist.get_default_backend_for_device('cuda')\n",
    "from torch.distributed import get_default_backend_for_device as backend_for\nb = backend_for('cuda')\n",
    "from torch.serialization import safe_globals\n",
    "import torch.nn.attention.flex_attention\n",
    "from torch import accelerator\n",
    "import torch as T\nx = T.float8_e8m0fnu\n",
    "import torch\nacc = getattr(torch, 'accelerator')\n",
    "import torch\nsd = torch.load(path)\n",
    "import torch\nsd = torch.load(path, map_location='cpu')\n",
    "import torch.nn.functional as F\ny = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)\n",
    # guards that do not guard: another name, the wrong branch, a handler that cannot catch the error
    "import torch\nif hasattr(torch, 'cuda'):\n    torch.accelerator.synchronize()\n",
    "import torch\nif hasattr(torch, 'accelerator'):\n    pass\nelse:\n    torch.accelerator.synchronize()\n",
    "import torch\ntry:\n    torch.accelerator.synchronize()\nexcept KeyError:\n    pass\n",
    "import torch\ntry:\n    pass\nexcept AttributeError:\n    torch.accelerator.synchronize()\n",
    "def f():\n    import torch.distributed as dist\n    return dist.tensor.DTensor\n",
])
def test_the_scan_catches_a_forbidden_use(source):
    found, _ = scan_source(source, "x.py")
    assert found and all(f.startswith("x.py:") for f in found), found


@pytest.mark.parametrize("source", [
    "import torch\nif hasattr(torch, 'accelerator'):\n    d = torch.accelerator.current_accelerator()\n",
    "import torch\nif not hasattr(torch, 'accelerator'):\n    d = None\nelse:\n    d = torch.accelerator.current_accelerator()\n",
    "import torch\nok = hasattr(torch, 'accelerator') and torch.accelerator.is_available()\n",
    "import torch\nd = torch.accelerator.current_accelerator() if hasattr(torch, 'accelerator') else None\n",
    "import torch\nacc = getattr(torch, 'accelerator', None)\n",
    "try:\n    from torch.serialization import safe_globals\nexcept ImportError:\n    safe_globals = None\n",
    "import torch.distributed as dist\ntry:\n    b = dist.get_default_backend_for_device('cuda')\n"
    "except (AttributeError, ValueError):\n    b = 'nccl'\n",
    "import torch\nif tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 6):\n    torch.accelerator.synchronize()\n",
    "import torch\nsd = torch.load(path, weights_only=True)\n",
    "import torch\nsd = torch.load(path, **kw)\n",
    "import torch\ntorch.cuda.synchronize()\nx = torch.uint16\n",        # 2.3: at the floor
])
def test_the_scan_accepts_a_guarded_or_old_use(source):
    assert scan_source(source, "x.py")[0] == []


@pytest.mark.parametrize("module,line", [
    ("parallel/group.py", "def _b():\n    return dist.get_default_backend_for_device('cuda')\n"),
    ("commands/device_query.py", "def _acc():\n    import torch\n    return torch.accelerator.device_count()\n"),
    ("io/caffemodel.py", "from torch.serialization import safe_globals\n"),
])
def test_the_scan_fails_on_a_package_copy_with_a_forbidden_use(tmp_path, module, line):
    pkg = tmp_path / "caffessl"
    shutil.copytree(REPO / "caffessl", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    assert scan(pkg)[0] == []
    target = pkg / module
    target.write_text(target.read_text(encoding="utf-8") + "\n\n" + line, encoding="utf-8")
    found, _ = scan(pkg)
    assert len(found) == 1 and found[0].startswith(f"caffessl/{module}:"), found
