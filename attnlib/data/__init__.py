"""Seeded synthetic tasks for the labs (no downloads).

Every generator takes an explicit ``seed`` (an int or a ``torch.Generator``),
returns tensors with documented shapes, and gives the same data for the same
seed. The token constants of each family live in its module.

* :mod:`attnlib.data.sequences` - reversal and sorting (seq2seq, pointer networks).
* :mod:`attnlib.data.recall` - selective copy, counting, Flip-Flop, associative recall.
* :mod:`attnlib.data.languages` - mildly context-sensitive languages (a^n b^n c^n, ...).
* :mod:`attnlib.data.passkey` - passkey retrieval: one marked token at a chosen depth in long filler.
* :mod:`attnlib.data.markov` - a Markov-chain language-model corpus with in-context triggers.
* :mod:`attnlib.data.topics` - an LDA-like corpus: documents mixing topics with disjoint words.
"""

from .languages import LanguageBatch, mcsl, mcsl_vocab_size
from .markov import lm_batch, markov_chain, markov_corpus
from .passkey import PasskeyBatch, passkey_task, passkey_vocab
from .recall import TaskBatch, associative_recall, counting, flip_flop, selective_copy
from .sequences import SequenceBatch, reversal_task, sorting_task
from .topics import TopicCorpus, lda_corpus

__all__ = [
    "SequenceBatch", "reversal_task", "sorting_task",
    "TaskBatch", "selective_copy", "counting", "flip_flop", "associative_recall",
    "LanguageBatch", "mcsl", "mcsl_vocab_size",
    "PasskeyBatch", "passkey_task", "passkey_vocab",
    "markov_chain", "markov_corpus", "lm_batch",
    "TopicCorpus", "lda_corpus",
]
