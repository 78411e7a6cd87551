"""A Sphinx extension that writes the attnlib reference: every public module, found when the book is built.

The page ``reference/attnlib.md`` holds one directive::

    ```{attnlib-reference}
    ```

which expands into one section per public module of attnlib (every module and package whose dotted
name has no part starting with ``_``): a heading, then an ``automodule`` (in an ``eval-rst`` block, since
the docstrings are reStructuredText) of the names the module itself defines, that is its ``__all__``
(or, if it has none, its public functions and classes) less the names it only re-exports, which are
linked to the module that defines them. A module added to attnlib therefore appears in the reference
without editing the page, and ``tools/build_book.py`` (``-W -n``) fails on a docstring that Sphinx
cannot read. Jupyter Book loads the extension through ``sphinx.local_extensions`` in ``_config.yml``;
it also resolves references to re-exported names and to private modules (``resolve_elsewhere``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

PACKAGE = "attnlib"


def public_modules(package: str = PACKAGE) -> list[str]:
    """Dotted names of the package and of every public module under it, sorted (packages before their modules)."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + ".", onerror=_raise):
        if not _private(info.name):
            names.append(info.name)
    return sorted(names)


def _raise(name: str):
    raise ImportError(f"attnlib reference: cannot import {name}")


def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def split_members(module) -> tuple[list[str], list[tuple[str, str]]]:
    """(names ``module`` defines, [(name, defining module) for names it re-exports]) of its public API."""
    if hasattr(module, "__all__"):
        names = [n for n in module.__all__ if not n.startswith("__")]
    else:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                 and obj.__module__ == module.__name__]
    own, reexported = [], []
    for name in names:
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
        if inspect.ismodule(obj):
            continue  # a submodule: it has its own section
        public_home = home is not None and home.startswith(PACKAGE + ".") and not _private(home)
        if public_home and home != module.__name__:
            reexported.append((name, home))  # documented in its own module's section
        else:
            own.append(name)
    return own, reexported


def module_markdown(name: str) -> list[str]:
    """The MyST Markdown of one module's section: a heading, then autodoc in reStructuredText (docstrings are RST)."""
    module = importlib.import_module(name)
    own, reexported = split_members(module)
    lines = [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}"]
    lines += [f"   :members: {', '.join(own)}", "   :undoc-members:"] if own else ["   :no-members:"]
    lines += ["```", ""]
    if reexported:
        links = ", ".join(f"{{py:obj}}`{n} <{home}.{n}>`" for n, home in reexported)
        lines += [f"Also importable from `{name}`: {links}.", ""]
    return lines


def reference_markdown(package: str = PACKAGE) -> str:
    """The MyST Markdown that the ``attnlib-reference`` directive expands into."""
    lines = []
    for name in public_modules(package):
        lines += module_markdown(name)
    return "\n".join(lines)


def _lookup(target: str):
    """(object, its module's name) that the dotted ``target`` names, or (None, None)."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        module = obj.__name__
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None, None
        return obj, module
    return None, None


def resolve_elsewhere(app, env, node, contnode):
    """Resolve a reference that the Python domain could not, when it names a real attnlib object.

    * ``attnlib.kernels.flash_attention`` (a name a package re-exports) links to where it is
      defined, ``attnlib.kernels.flash.flash_attention``.
    * A name inside a private module (``attnlib.kernels._flash_fwd``), which the reference leaves
      out, is shown as code without a link.

    Anything else (a misspelt name, an object that does not exist) stays unresolved, and the
    build's ``-n -W`` fails on it.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith(PACKAGE + "."):
        return None
    obj, module = _lookup(target)
    if obj is None:
        return None
    if _private(module):
        return contnode
    if inspect.isfunction(obj) or inspect.isclass(obj):
        home = f"{obj.__module__}.{obj.__qualname__}"
        if home != target:
            return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], home,
                                                     node, contnode)
    return None


def setup(app):
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    class AttnlibReference(SphinxDirective):
        has_content = False

        def run(self):
            from docutils import nodes

            node = nodes.section()
            node.document = self.state.document
            source = self.get_source_info()[0]
            content = StringList(reference_markdown().splitlines(), source=source)
            for name in public_modules():  # an incremental build re-reads the page when attnlib changes
                self.env.note_dependency(importlib.import_module(name).__file__)
            nested_parse_with_titles(self.state, content, node)
            return node.children

    app.add_directive("attnlib-reference", AttnlibReference)
    app.connect("missing-reference", resolve_elsewhere)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
