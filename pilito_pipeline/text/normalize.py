"""Persian-aware normalisation: ONE function, used for indexing and for queries alike.

Choice of library: none; this is a small normaliser of our own, built on `str.translate` and a
handful of precompiled regexes. Candidates looked at (wheels downloaded and read, not installed):
- hazm: ruled out by the brief (pins numpy==1.24.3, pulls gensim/fasttext).
- shekar 1.7: needs onnxruntime, sentencepiece and numpy>=2; far too heavy for a normaliser.
- parsivar 0.2.3: an 18 MB wheel depending on nltk; last released 2024 with little maintenance.
- piraye 1.1: LGPL, depends on nltk; a character-table normaliser without the affix/half-space
  spacing rules we need.
- davat 2.1: MIT and light (emoji only), but written for display, not search: it turns every
  ZWNJ into a space (so "کتاب‌خانه" becomes two words), maps ء to ئ, converts all digits to
  Persian digits, rewrites "?" to "؟" and quotes to «», and runs ~50 sequential regex passes.
Search needs something narrower and symmetric: the same folding for a page and for a query,
ASCII digits (users type "60" as often as "۶۰"), lower-cased Latin, ZWNJ kept as the compound
marker the tokenizer relies on. That fits in this module and is covered case by case in
pilito_pipeline_tests/text/test_normalize.py.

What `normalize` does, in order:
1. NFKC (folds Arabic presentation forms such as ﻙ ﻱ and full-width Latin), then Arabic letters
   to Persian: ي ى ې ۍ ے → ی, ك ڪ → ک, ة ۀ ھ ە → ه, أ إ ٱ → ا, ؤ → و; stray hamza ء dropped;
   آ and ئ are kept (they are Persian letters).
2. Diacritics (harakat, tanwin, shadda, sukun, superscript alef, hamza above) and kashida
   (tatweel) removed.
3. Persian and Arabic-Indic digits → ASCII; Arabic thousands/decimal separators → "," and ".".
4. Invisible characters (ZWJ, ZWSP, BOM, LRM/RLM, bidi controls, soft hyphen) removed; every
   kind of space → " "; ZWNJ kept once, only between two letters.
5. Half-space repair: "می توانید" → "می‌توانید", "کتاب ها" → "کتاب‌ها" (also های، هایی، تر،
   ترین), spaces before punctuation removed, runs of spaces collapsed.
6. Everything lower-cased (matters for Latin script only).
"""

from __future__ import annotations

import re
import unicodedata

ZWNJ = "\u200c"

_LETTER_MAP = {
    **dict.fromkeys("يىېۍےﻱﻲﻳﻴﯼﯽﯾﯿ", "ی"),
    **dict.fromkeys("كڪﻙﻚﻛﻜ", "ک"),
    **dict.fromkeys("ةۀھە", "ه"),
    **dict.fromkeys("أإٱ", "ا"),
    "ؤ": "و",
    "ء": "",
}
_DIGIT_MAP = {
    **{chr(0x06F0 + i): str(i) for i in range(10)},  # Persian ۰-۹
    **{chr(0x0660 + i): str(i) for i in range(10)},  # Arabic-Indic ٠-٩
    "\u066c": ",",  # Arabic thousands separator ٬
    "\u066b": ".",  # Arabic decimal separator ٫
}
_DIACRITICS = [*range(0x064B, 0x0660), 0x0670, *range(0x0610, 0x061B), *range(0x06D6, 0x06DD), 0x0640]
_INVISIBLE = [0x00AD, 0x200B, 0x200D, 0x200E, 0x200F, 0xFEFF, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SPACES = [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x0009, 0x000B, 0x000C]

_TRANSLATION = str.maketrans(
    {
        **_LETTER_MAP,
        **_DIGIT_MAP,
        **dict.fromkeys(_DIACRITICS, None),
        **dict.fromkeys(_INVISIBLE, None),
        **dict.fromkeys(_SPACES, " "),
        "\r": "\n",
    }
)

_PERSIAN_LETTER = "\u0621-\u064a\u066e-\u06d3\u06fa-\u06ff"
_SPACE_RUN = re.compile(r"[ ]{2,}")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_NEWLINE_RUN = re.compile(r"\n{3,}")
_ZWNJ_RUN = re.compile(f"{ZWNJ}{{2,}}")
# A ZWNJ only makes sense between two Arabic-script letters; anywhere else it is noise.
_STRAY_ZWNJ = re.compile(f"(?<![{_PERSIAN_LETTER}]){ZWNJ}|{ZWNJ}(?![{_PERSIAN_LETTER}])")
_VERB_PREFIX_SPACE = re.compile(f"(?<![{_PERSIAN_LETTER}{ZWNJ}])(ن?می) +(?=[{_PERSIAN_LETTER}])")
_SUFFIX_SPACE = re.compile(
    f"(?<=[{_PERSIAN_LETTER}]{{2}}) +(هایی|های|ها|ترین|تر)(?![{_PERSIAN_LETTER}{ZWNJ}])"
)
_SPACE_BEFORE_PUNCTUATION = re.compile(r" +([.,;:!?،؛؟)\]»])")


def normalize(text: str) -> str:
    """Fold `text` to the one form we index and query with (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATION)
    text = _ZWNJ_RUN.sub(ZWNJ, text)
    text = _STRAY_ZWNJ.sub("", text)
    text = _VERB_PREFIX_SPACE.sub(lambda m: m.group(1) + ZWNJ, text)
    text = _SUFFIX_SPACE.sub(lambda m: ZWNJ + m.group(1), text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _SPACE_RUN.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    text = _NEWLINE_RUN.sub("\n\n", text)
    return text.strip().lower()
