"""Reading a YAML file (recipes, study files) as a node tree that keeps line numbers, with one-line errors."""
from __future__ import annotations

import os


def compose_file(path, error, what: str):
    """``(text, root node)`` of the YAML file at ``path``: safe composition only (no object construction).
    An unreadable file, invalid YAML (with its line) or an empty file raises ``error`` naming ``what``."""
    import yaml
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: the {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise error(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if root is None:
        raise error(f"{path}: the {what} is empty")
    return text, root
