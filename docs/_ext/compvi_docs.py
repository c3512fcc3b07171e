"""Sphinx extension for compvi's documentation.

It does three things, each at build time, from the installed package:

- ``compvi-help``: a directive that renders the ``--help`` text of the ``compvi`` command
  line (or of one of its subcommands) from its argparse parser, so the command-line
  reference cannot drift from the code.
- Class pages list every public member of compvi's classes, including those inherited from
  compvi's own mixins and from scvi-tools' ``BaseModelClass``; members inherited from other
  base classes (PyTorch, Lightning, the rest of scvi-tools, builtins) are left to those
  projects' references. The private classes compvi's model is assembled from (its mixins)
  are replaced, in a class's "Bases" line, by their public ancestors.
- A cross-reference to a compvi object by the private module that defines it (as type hints
  write it, e.g. ``compvi.model._perturbation_scores.PerturbationScores``) resolves to the
  page of the same object under its public name. References to objects that have no public,
  documented name stay unresolved, so ``-n`` still reports them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
from collections.abc import Iterator
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

# Packages whose ``__all__`` defines compvi's public names, most prominent first: a name in
# the top-level package is preferred to the same object's name in a subpackage.
PUBLIC_PACKAGES = (
    "compvi",
    "compvi.model",
    "compvi.module",
    "compvi.train",
    "compvi.dataloaders",
    "compvi.data",
    "compvi.metrics",
    "compvi.pl",
    "compvi.tl",
    "compvi.cli",
)
# Modules whose members a compvi class page documents when the class inherits them.
INHERITED_FROM = ("compvi", "scvi.model.base")

# --------------------------------------------------------------------------- public names


_PUBLIC_OBJECTS: dict[int, tuple[Any, list[str]]] = {}


def _public_objects() -> dict[int, tuple[Any, list[str]]]:
    """id(object) → (object, its public dotted names) for every name in a public ``__all__``."""
    if _PUBLIC_OBJECTS:
        return _PUBLIC_OBJECTS
    found = _PUBLIC_OBJECTS
    for package_name in PUBLIC_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        found.setdefault(id(package), (package, []))[1].append(package_name)
        for name in getattr(package, "__all__", []):
            obj = getattr(package, name, None)
            if obj is not None:
                found.setdefault(id(obj), (obj, []))[1].append(f"{package_name}.{name}")
    return found


def _public_names(obj: Any) -> list[str]:
    entry = _public_objects().get(id(obj))
    return list(entry[1]) if entry is not None and entry[0] is obj else []


def _public_classes() -> list[type]:
    return [obj for obj, _ in _public_objects().values() if isinstance(obj, type)]


# --------------------------------------------------------------------------- class members


def _function_module(obj: Any) -> str | None:
    """Module that defines a function-like member (method, property, classmethod, slot)."""
    objclass = getattr(obj, "__objclass__", None)  # methods and slots of builtin types
    if isinstance(objclass, type):
        return objclass.__module__
    for candidate in (
        getattr(obj, "fget", None),  # property
        getattr(obj, "func", None),  # functools.cached_property / partial
        getattr(obj, "__func__", None),  # classmethod, staticmethod, bound method
        obj,
    ):
        if callable(candidate) and isinstance(getattr(candidate, "__module__", None), str):
            return candidate.__module__
    return None


def _defining_module(name: str, obj: Any) -> str | None:
    """Module of the class that defines member ``name`` (value ``obj``), if it can be told."""
    module = _function_module(obj)
    if module is not None:
        return module
    # A plain class attribute (a constant, a descriptor, an annotation without a value):
    # find a public compvi class whose MRO resolves ``name`` to this very object, or that
    # only annotates it, and the class in that MRO that holds it.
    for cls in _public_classes():
        for klass in cls.__mro__:
            if name in vars(klass):
                if vars(klass)[name] is obj:
                    return klass.__module__
                break
            if name in vars(klass).get("__annotations__", {}):
                return klass.__module__
    return None


def _skip_member(app, what: str, name: str, obj: Any, skip: bool, options) -> bool | None:
    """Skip members that a compvi class inherits from other projects' base classes."""
    if what not in {"class", "method", "attribute", "property"}:
        return None
    module = _defining_module(name, obj)
    if module is None:
        return None
    if not any(module == root or module.startswith(root + ".") for root in INHERITED_FROM):
        return True
    if _function_module(obj) is not None and not inspect.getdoc(obj):
        # Autodoc leaves undocumented members out; leave them out of the tables too (e.g.
        # scvi-tools' differential_abundance, a stub that raises NotImplementedError).
        return True
    return None  # the default: public members shown, private ones skipped


def _inherits_from_other_project(module: str | None) -> bool:
    return module is not None and module.split(".")[0] != "compvi"


def inherited_members_by_class() -> dict[str, list[str]]:
    """Public name of each public compvi class → its public members from other projects.

    These are the members a class page lists under "Inherited from scvi-tools" (the skip
    rules below leave out the rest). Plain strings, so Sphinx can cache them with the
    configuration (``autosummary_context``).
    """
    inherited: dict[str, list[str]] = {}
    for cls in _public_classes():
        if cls.__module__.split(".")[0] != "compvi":
            continue
        names = sorted(
            name
            for name in dir(cls)
            if not name.startswith("_")
            and _inherits_from_other_project(_defining_module(name, getattr(cls, name, None)))
        )
        for public_name in _public_names(cls):
            inherited[public_name] = names
    return inherited


def _public_bases(cls: type) -> list[type]:
    """A class's bases with compvi's private classes replaced by their public ancestors."""
    bases: list[type] = []
    for base in cls.__bases__:
        private = base.__module__.split(".")[0] == "compvi" and not _public_names(base)
        for replacement in _public_bases(base) if private else [base]:
            if replacement not in bases:
                bases.append(replacement)
    return bases


def _process_bases(app, name: str, obj: Any, options, bases: list) -> None:
    if isinstance(obj, type) and obj.__module__.split(".")[0] == "compvi":
        bases[:] = [base for base in _public_bases(obj) if base is not object]


# --------------------------------------------------------------------------- references


def _import_path(target: str) -> tuple[Any, list[str]] | None:
    """Import the longest module prefix of a dotted path; return it and the rest."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        return module, parts[split:]
    return None


def _public_aliases(target: str) -> list[str]:
    """Public dotted names of the object ``target`` names, with any member path kept."""
    imported = _import_path(target)
    if imported is None:
        return []
    obj, rest = imported
    aliases = []
    for index in range(len(rest) + 1):
        if index:
            try:
                obj = getattr(obj, rest[index - 1])
            except AttributeError:
                return aliases
        tail = rest[index:]
        aliases.extend(".".join([name, *tail]) for name in _public_names(obj))
    return [alias for alias in aliases if alias != target]


def _object_at(path: str) -> Any:
    """The object a dotted path names, or ``None``."""
    imported = _import_path(path)
    if imported is None:
        return None
    obj, rest = imported
    for name in rest:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _documented_as(domain, path: str) -> list[str]:
    """Documented compvi names of the object at ``path`` (e.g. a constant a module imports)."""
    obj = _object_at(path)
    if obj is None:
        return []
    name = path.rsplit(".", 1)[-1]
    return [
        fullname
        for fullname in domain.objects
        if fullname.startswith("compvi.")
        and fullname.rsplit(".", 1)[-1] == name
        and fullname != path
        and _object_at(fullname) is obj
    ]


def _defining_module_of_context(node) -> str | None:
    """Module whose source holds the docstring a reference sits in, for a compvi context.

    Autodoc documents ``compvi.dataloaders._paired.PairedDataLoader`` under its public
    module ``compvi.dataloaders``, but a bare name in its docstring was written for the
    module that defines the class.
    """
    module_name = node.get("py:module") or ""
    if module_name.split(".")[0] != "compvi":
        return None
    imported = _import_path(".".join(filter(None, [module_name, node.get("py:class")])))
    if imported is None:
        return None
    obj, rest = imported
    for name in rest:
        obj = getattr(obj, name, None)
    defining = getattr(obj, "__module__", None)
    if isinstance(obj, type) and isinstance(defining, str) and defining != module_name:
        return defining
    return None


def _resolve_private_path(app, env, node, contnode):
    """Resolve a compvi reference that names an object by where it is defined.

    ``compvi.model._perturbation_scores.PerturbationScores`` (as type hints write it)
    resolves to the page of ``compvi.PerturbationScores``; a bare name in a class docstring
    resolves against the module that defines the class.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = []
    if target.startswith("compvi."):
        candidates.append(target)
    elif not target.startswith((".", "~")):
        # A bare name: as the module the docstring was written in sees it.
        context = node.get("py:module") or ""
        for module in (_defining_module_of_context(node), context):
            if module and module.split(".")[0] == "compvi":
                candidates.append(f"{module}.{target}")
    domain = env.get_domain("py")
    aliases = [
        alias
        for candidate in candidates
        for alias in [candidate, *_public_aliases(candidate), *_documented_as(domain, candidate)]
        if alias != target
    ]
    for alias in aliases:
        alias_node = node.deepcopy()
        alias_node["reftarget"] = alias
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], alias, alias_node, contnode
        )
        if resolved is not None:
            return resolved
    return None


# --------------------------------------------------------------------------- command line


@contextlib.contextmanager
def _terminal_width(columns: int) -> Iterator[None]:
    """Let argparse wrap its help at ``columns`` whatever the terminal the build runs in."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    raise ValueError(f"{parser.prog} has no subcommand {command!r}")


class CommandHelp(SphinxDirective):
    """``compvi-help [SUBCOMMAND ...]``: the ``--help`` text of compvi's command line.

    The text comes from the parser the ``compvi`` command itself uses
    (``compvi.cli._main._parser``), wrapped at 88 columns.
    """

    has_content = False
    optional_arguments = 4

    def run(self) -> list[nodes.Node]:
        from compvi.cli import _fit, _main, _options

        parser = _main._parser()
        for command in self.arguments:
            parser = _subparser(parser, command)
        with _terminal_width(90):  # argparse wraps at COLUMNS - 2
            text = parser.format_help().rstrip() + "\n"
        # Rebuild the page when the command line changes.
        for module in (_main, _fit, _options):
            self.env.note_dependency(module.__file__)
        block = nodes.literal_block(text, text, language="text")
        self.set_source_info(block)
        return [block]


def setup(app):
    """Register the directive and the event handlers."""
    app.add_directive("compvi-help", CommandHelp)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("missing-reference", _resolve_private_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
