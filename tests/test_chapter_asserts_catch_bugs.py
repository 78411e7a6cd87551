"""Every assert in a chapter must be able to fail (an assert true by construction is not a check).

Each mutation breaks one step of a chapter (an attnlib function it calls or the experiment's key line) the way
a careless author might; running the chapter up to the cell named by ``stop_after`` must then raise an
AssertionError. The unbroken chapters run under nbval (``pytest chapters/``). Mutations that break an attnlib
function do it in the chapter's setup cell (e.g. replace ``import attnlib`` with that import followed by an
assignment), so the library on disk is never touched.
"""

import pytest
from helpers import run_chapter

# chapter -> list of (old text, broken text, stop_after: text of the cell whose assert must fail).
# One block per chapter; keep each block's lines together.
MUTATIONS = {
    "01_attention_as_lookup": [
    ],

    "02_sparse_distributed_memory": [
    ],

    "03_pavlovian_conditioning": [
    ],

    "04_bayesian_attention": [
    ],

    "05_rank_limits": [
    ],

    "06_normalization_limits": [
    ],

    "07_expressivity_and_dynamics": [
    ],
}

CASES = [(chapter, *m) for chapter, ms in MUTATIONS.items() for m in ms]


@pytest.mark.parametrize("chapter", MUTATIONS)
def test_every_part_one_chapter_has_mutations(chapter):
    assert len(MUTATIONS[chapter]) >= 2, f"{chapter}: add mutations that its asserts must catch"


@pytest.mark.slow
@pytest.mark.parametrize("chapter, old, new, stop_after", CASES,
                         ids=[f"{c[0][:2]}:{c[2][:40]}" for c in CASES])
def test_a_broken_chapter_fails_an_assert(chapter, old, new, stop_after):
    with pytest.raises(AssertionError):
        run_chapter(chapter, old, new, stop_after=stop_after)
