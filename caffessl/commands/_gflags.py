"""Caffe's command lines, as gflags parses them, rewritten into the ``--flag=value`` form argparse reads.

``caffe train -solver S -weights W -gpu 0`` is how every Caffe example runs the tool. gflags takes a flag with
one or two dashes, its value after ``=`` or as the next word, a boolean as ``-flag``, ``-noflag`` or
``-flag=true|false|1|0|yes|no|t|f|y|n`` (the last occurrence wins), and flags before or after the command;
a flag Caffe defines but the command does not use is accepted and ignored (``caffe train -model M``).
:func:`normalize` does the same for every ``caffessl`` command, once, before argparse: a single-dash word whose
name (``_`` and ``-`` alike) is one of the command's long options becomes that option; ``device_query`` /
``compute_image_mean`` name the hyphenated commands. Words that name no option pass through unchanged, so
argparse still reports them.
"""
from __future__ import annotations

import argparse
import sys

# every flag tools/caffe.cpp defines (gflags accepts each with every command)
CAFFE_FLAGS = ("gpu", "solver", "model", "phase", "level", "stage", "snapshot", "weights", "iterations",
               "sigint_effect", "sighup_effect")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _key(name: str) -> str:
    return name.replace("-", "_")


def _options(parser) -> dict:
    """{flag name with '_': (the long option string, its action)}."""
    out = {}
    for action in parser._actions:
        for s in action.option_strings:
            if s.startswith("--"):
                out.setdefault(_key(s[2:]), (s, action))
    return out


def _is_bool(action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))


def _bool_value(text: str, word: str, command: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    from ..errors import CaffeSSLError
    raise CaffeSSLError(f"{word}: a boolean flag takes true or false (or 1/0, yes/no), got '{text}'"
                        + (f" (caffessl {command})" if command else ""))


def _split(word: str):
    """'-name=value' / '--name' -> (name, '=' or '', value); None for a word that is no flag."""
    if word in ("-", "--") or not word.startswith("-") or word[1:2].isdigit() or word[1:2] == ".":
        return None
    body = word[2:] if word.startswith("--") else word[1:]
    name, eq, value = body.partition("=")
    return name, eq, value


def normalize_words(words, parser, command: str = "", notes=None) -> list[str]:
    """``words`` (after the command) rewritten for ``parser``: known long options with one or two dashes become
    ``--option=value`` / ``--option``; booleans resolved gflags' way; Caffe's flags the command does not use
    dropped with a note (appended to ``notes``)."""
    opts = _options(parser)
    nested = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    out: list[str] = []
    bools: dict = {}                      # dest -> (option string, action, value), last one wins
    tail: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            tail = words[i:]
            break
        parts = _split(word)
        if parts is None and word in nested:   # `convert imageset -shuffle ...`: the sub-command's own flags
            tail = [word] + normalize_words(words[i + 1:], nested[word], command, notes)
            break
        if parts is None:
            out.append(word)
            i += 1
            continue
        name, eq, value = parts
        hit = opts.get(_key(name))
        negated = False
        if hit is None and not eq and _key(name).startswith("no"):
            positive = opts.get(_key(name)[2:])
            if positive is not None and _is_bool(positive[1]):
                hit, negated = positive, True
        if hit is None:
            if _key(name) in CAFFE_FLAGS:        # a Caffe flag this command does not read: ignored, as in Caffe
                if notes is not None:
                    notes.append(f"-{name} is not used by `{command}` (ignored, as Caffe does)")
                i += 1 if eq else 2
                continue
            out.append(word)
            i += 1
            continue
        opt, action = hit
        if _is_bool(action):
            on = _bool_value(value, word, command) if eq else not negated
            bools[action.dest] = (opt, action, on)
            i += 1
        elif eq:
            out.append(f"{opt}={value}")
            i += 1
        elif action.nargs is None and i + 1 < len(words):   # gflags: the next word is the value, as it is
            out.append(f"{opt}={words[i + 1]}")
            i += 2
        else:                                   # --help, --version, several values; or argparse says
            out.append(opt)                     # "expected one argument"
            i += 1
    for opt, action, on in bools.values():
        if on == bool(action.const):
            out.append(opt)
    return out + tail


def _command_index(argv, choices):
    """(index of the command word, its name in ``choices``), or (None, None). Flags may stand before it (gflags
    reads them anywhere); a flag that takes a value and has no '=' takes the next word with it."""
    valued = set(CAFFE_FLAGS)
    for p in choices.values():
        valued |= {k for k, (_, a) in _options(p).items() if a.nargs is None and not _is_bool(a)}
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == "--":
            break
        parts = _split(word)
        if parts is not None:
            skip = not parts[1] and _key(parts[0]) in valued
            continue
        name = word if word in choices else word.replace("_", "-")
        if name in choices:
            return i, name
        break
    return None, None


def normalize(argv, parser) -> list[str]:
    """The whole command line: global flags and the command's flags, wherever they stand, rewritten."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    at, command = _command_index(argv, sub.choices)
    if at is None:
        return normalize_words(list(argv), parser)
    before, after = list(argv[:at]), list(argv[at + 1:])
    top = [w for w in before if _split(w) and _key(_split(w)[0]) in ("version", "help")]
    rest = [w for w in before if w not in top]
    notes: list[str] = []
    words = normalize_words(rest + after, sub.choices[command], command, notes)
    for n in notes:
        print(f"caffessl {command}: note: {n}", file=sys.stderr)
    return normalize_words(top, parser) + [command] + words
