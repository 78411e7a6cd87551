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
