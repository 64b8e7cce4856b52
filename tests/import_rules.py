"""The package's import rules (docs/ARCHITECTURE.md), checked over the source with ``ast``: every ``import``
and ``from ... import`` in a module -- at the top or inside a function -- is resolved to a module name
and compared with the rules. ``check(package_dir)`` returns the violations; tests/test_import_rules.py
runs it on the package and proves that it fails when a forbidden import is added."""
from __future__ import annotations

import ast
from pathlib import Path

# (importer prefix, forbidden prefix, why). A prefix matches the module itself and its submodules.
FORBIDDEN = [
    ("caffessl.layers", "caffessl.solver", "layers never import the solver"),
    ("caffessl.net", "caffessl.solver", "the Net never imports the solver"),
    ("caffessl.net", "caffessl.sparsity", "the Net never imports sparsity/ (the matrix view is weights_matrix)"),
    ("caffessl.solver", "caffessl.sparsity", "the solver never imports sparsity/ (the matrix view is "
                                              "weights_matrix)"),
    ("caffessl.io", "caffessl.net", "io never imports the Net: it reads and writes messages and arrays"),
    ("caffessl.io", "caffessl.solver", "io never imports the solver"),
    ("caffessl.weights_matrix", "caffessl", "weights_matrix depends on nothing inside the package"),
    ("caffessl.conv_modes", "caffessl.solver", "inference engines never import the solver"),
    ("caffessl.parallel", "caffessl.solver", "parallel/ never imports the solver: the solver attaches it"),
    ("caffessl.parallel", "caffessl.net", "parallel/ never imports the Net: it works on the solver it is given"),
    # io's readers sit on the upgrade functions, never the other way round (no import cycle)
    ("caffessl.io.upgrade", "caffessl.io.caffemodel", "the upgrade functions work on messages, not files"),
    ("caffessl.io.upgrade", "caffessl.io.prototxt", "the upgrade functions work on messages, not files"),
    ("caffessl.io.upgrade_legacy", "caffessl.io.caffemodel", "the upgrade functions work on messages, not files"),
    ("caffessl.io.upgrade_legacy", "caffessl.io.prototxt", "the upgrade functions work on messages, not files"),
]
# nothing in the library imports the command line; these modules are the command line
CLI = ("caffessl.cli", "caffessl.commands", "caffessl.__main__")


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path):
    """(line, imported module) for every import in the file; ``from X import y`` also yields X.y (y may be
    a submodule)."""
    mod = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for a in node.names:
                yield node.lineno, f"{target}.{a.name}"


def check(package_dir) -> list[str]:
    """Violations of the rules in the package at ``package_dir`` (a directory named caffessl), one line
    each: file:line, who imports what, and the rule."""
    root = Path(package_dir)
    found = {}
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root)
        where = path.relative_to(root.parent)
        for line, target in imports_of(path, root):
            if not _matches(target, "caffessl"):
                continue
            for src, bad, why in FORBIDDEN:
                if _matches(mod, src) and _matches(target, bad) and not _matches(target, src):
                    found.setdefault((str(where), line, why), f"{where}:{line}: {mod} imports {target}: {why}")
            if not any(_matches(mod, c) for c in CLI) and any(_matches(target, c) for c in CLI):
                why = "nothing in the library imports the command line (cli, commands/)"
                found.setdefault((str(where), line, why), f"{where}:{line}: {mod} imports {target}: {why}")
    return sorted(found.values())
