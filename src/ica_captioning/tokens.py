"""The special tokens of every vocabulary: their words and their ids (one set, used everywhere).

``vocabulary["itos"]`` starts with :data:`SPECIAL_WORDS`, so word ``SPECIAL_WORDS[i]`` has id
``i``; :func:`ica_captioning.data.text.build_vocabulary` writes them in this order.
"""

PAD_WORD, START_WORD, END_WORD, UNK_WORD = "<pad>", "<start>", "<end>", "<unk>"
#: The first entries of every vocabulary, in id order.
SPECIAL_WORDS = (PAD_WORD, START_WORD, END_WORD, UNK_WORD)
#: Ids of the special tokens (``PAD_ID`` pads captions and is ignored by every loss).
PAD_ID, START_ID, END_ID, UNK_ID = range(len(SPECIAL_WORDS))
