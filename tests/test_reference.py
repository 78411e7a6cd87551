"""The attnlib reference page (reference/attnlib.md, expanded by tools/attnlib_reference.py) covers every public module."""

import importlib
import sys
import types

import yaml
from helpers import ROOT

import attnlib_reference

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def _public_modules_on_disk():
    """Every public module and package of attnlib from the file tree alone (independent of pkgutil)."""
    names = set()
    for path in (ROOT / "attnlib").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.add(".".join(parts))
    return names


def test_every_public_module_gets_a_section_and_no_private_one():
    on_disk = _public_modules_on_disk()
    assert set(attnlib_reference.public_modules()) == on_disk
    page = attnlib_reference.reference_markdown()
    for name in on_disk:
        assert f"## `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n" in page, name
    assert ".. automodule:: attnlib.kernels._" not in page and "__main__" not in page


def test_a_module_documents_what_it_defines_and_links_what_it_reexports():
    import attnlib.data
    import attnlib.kernels

    own, reexported = attnlib_reference.split_members(importlib.import_module("attnlib.core"))
    assert own == list(importlib.import_module("attnlib.core").__all__) and reexported == []
    own, reexported = attnlib_reference.split_members(attnlib.data)
    assert own == [] and ("reversal_task", "attnlib.data.sequences") in reexported
    assert attnlib.kernels.__all__ == sorted(attnlib.kernels._LAZY)  # spelt out for linters; must stay the same
    own, reexported = attnlib_reference.split_members(attnlib.kernels)
    assert ("flash_attention", "attnlib.kernels.flash") in reexported
    section = "\n".join(attnlib_reference.module_markdown("attnlib.data"))
    assert ":no-members:" in section and "{py:obj}`reversal_task <attnlib.data.sequences.reversal_task>`" in section


def test_a_module_without_all_documents_its_public_functions_and_classes():
    module = types.ModuleType("attnlib._probe")
    exec("import math\nfrom math import sqrt\ndef f():\n    pass\ndef _g():\n    pass\nclass C:\n    pass\nX = 3\n",
         module.__dict__)
    sys.modules[module.__name__] = module
    try:
        own, reexported = attnlib_reference.split_members(module)
    finally:
        del sys.modules[module.__name__]
    assert own == ["f", "C"] and reexported == []
    # A name that lives in a private module is documented where it is public, not linked to the private one.
    hidden = types.ModuleType("attnlib.public_probe")
    exec("def helper():\n    pass\nhelper.__module__ = 'attnlib.kernels._private_probe'\n__all__ = ['helper']\n",
         hidden.__dict__)
    assert attnlib_reference.split_members(hidden) == (["helper"], [])


def test_references_to_reexports_and_private_modules_resolve_and_others_do_not():
    """The missing-reference handler: re-exports go to their home, private names become code, typos stay errors."""

    class Domain:
        def resolve_xref(self, env, fromdoc, builder, typ, target, node, contnode):
            return ("resolved", target)

    class Env:
        def get_domain(self, name):
            assert name == "py"
            return Domain()

    def node(target, reftype="func"):
        return {"refdomain": "py", "reftarget": target, "reftype": reftype, "refdoc": "reference/attnlib"}

    contnode = object()
    app = types.SimpleNamespace(builder="html")

    def resolve(_, env, node, contnode):
        return attnlib_reference.resolve_elsewhere(app, env, node, contnode)

    assert resolve(None, Env(), node("attnlib.kernels.flash_attention"), contnode) == \
        ("resolved", "attnlib.kernels.flash.flash_attention")
    assert resolve(None, Env(), node("attnlib.bench.attention_flops"), contnode) == \
        ("resolved", "attnlib.bench.flops.attention_flops")
    assert resolve(None, Env(), node("attnlib.kernels._flash_fwd", "mod"), contnode) is contnode
    assert resolve(None, Env(), node("attnlib.core.no_such_function"), contnode) is None
    assert resolve(None, Env(), node("attnlib.no_such_module.f"), contnode) is None
    assert resolve(None, Env(), node("torch.Tensor", "class"), contnode) is None


def test_the_book_loads_the_extension_and_lists_the_page():
    sphinx = CONFIG["sphinx"]
    assert {"sphinx.ext.autodoc", "sphinx.ext.napoleon"} <= set(sphinx["extra_extensions"])
    assert sphinx["local_extensions"] == {"attnlib_reference": "tools"}
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    back = next(part for part in toc["parts"] if part["caption"] == "Back matter")
    assert {"file": "reference/attnlib"} in back["chapters"]
    assert "```{attnlib-reference}\n```" in (ROOT / "reference" / "attnlib.md").read_text()
