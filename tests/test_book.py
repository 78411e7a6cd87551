"""The site builds with warnings as errors (broken links, unknown citations, pages missing from the toc)."""

import pytest
import helpers  # noqa: F401  (puts tools/ on sys.path)

import build_book


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    proc = build_book.build(tmp_path)
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, log
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    assert (html / "chapters" / "01_attention_as_lookup.html").exists()
    assert (html / "labs" / "lab01_scaled_dot_product.html").exists()
    assert not (html / "solutions").exists(), "solutions must stay out of the site"
    page = (html / "chapters" / "01_attention_as_lookup.html").read_text(encoding="utf-8")
    assert "Effective Approaches to Attention-based Neural Machine Translation" in page  # the rendered bibliography
    assert "colab.research.google.com" in page  # the launch button
    # The attnlib reference (reference/attnlib.md): autodoc ran, and the labs link into it.
    reference = (html / "reference" / "attnlib.html").read_text(encoding="utf-8")
    assert 'id="attnlib.core.scaled_dot_product_attention"' in reference
    assert 'id="attnlib.kernels.flash.flash_attention"' in reference and 'id="module-attnlib.heads"' in reference
    lab = (html / "labs" / "lab01_scaled_dot_product.html").read_text(encoding="utf-8")
    assert "../reference/attnlib.html#attnlib.core.scaled_dot_product_attention" in lab
    # The lab's Colab badge and the site's launch button open the same notebook.
    launch = "https://colab.research.google.com/github/attention-course/attention-from-theory-to-triton/blob/main/labs/"
    assert lab.count(launch + "lab01_scaled_dot_product.ipynb") >= 2, "badge and launch button"


@pytest.mark.slow
def test_figures_render_when_executed_as_the_book_does(monkeypatch):
    """`make book` executes notebooks with matplotlib's inline backend: figures become image outputs.

    (With MPLBACKEND=Agg, as the test run uses, ``plt.show()`` would draw nothing and the
    site would have no figures.)
    """
    import nbformat
    from helpers import ROOT
    from nbclient import NotebookClient

    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(ROOT / "chapters" / "01_attention_as_lookup.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "chapter 01 should show its figures"
    makefile = (ROOT / "Makefile").read_text()
    book_recipe = makefile.split("\nbook:")[1].split("\n\n")[0]
    assert "MPLBACKEND=Agg" not in book_recipe
