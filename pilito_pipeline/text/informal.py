"""Spoken Persian → written Persian, for what customers type into a chat.

Customers write the spoken language: «میشه»، «نمیتونم»، «میخوام»، «چجوری»، «فایلو»، «داره»; pages are
written in the formal one: «می‌شود»، «نمی‌توانم»، «می‌خواهم»، «چگونه»، «فایل را»، «دارد». `formalize`
rewrites the first into the second, word by word, where the rewrite is unambiguous:

1. Whole words with a fixed written form (`_WORDS`: question words, pronouns, common contractions).
2. Verbs with the prefix می/نمی (with or without the half-space), or ب/ن with a spoken stem:
   the spoken present stem becomes the written one (`_STEMS`: د → ده, ش → شو, خوا → خواه,
   تون → توان, ...) and the spoken person ending the written one (ه → د, ین → ید, ن → ند).
   A word is only rewritten when its stem is a known verb stem, so «میز» or «بدن» stay as they are.
3. Spoken endings on nouns: the object clitic «و/رو» («فایلو»، «عکسرو»), the spoken plural «ا/ای»
   («سرورا»، «اسکریپتای»), the spoken possessives «شون/تون/مون» («پاکشون») and «ه» for «است»
   («پروکسیه»). Each is ambiguous with words that end so (منو، رادیو، دیگه), so the word is not
   rewritten; its stem is returned as an extra search term.

hazm's informal normaliser was weighed (see `text/normalize.py` for why hazm is not installed:
it pins numpy 1.24); this table covers the forms support questions use, and each rule has a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pilito_pipeline.text.normalize import ZWNJ, normalize

_WORDS = {
    "چجوری": "چگونه", "چجوریه": "چگونه است", "چطوری": "چگونه", "چطور": "چگونه", "چیجوری": "چگونه",
    "چیه": "چیست", "کیه": "کیست", "کجاس": "کجاست", "چنده": "چند است", "چقده": "چقدر است",
    "یه": "یک", "اگه": "اگر", "واسه": "برای", "واسهی": "برای", "بهم": "به من", "چیکار": "چه کار", "چکار": "چه کار",
    "اون": "آن", "اونو": "آن را", "اینو": "این را", "اونا": "آن‌ها", "اینا": "این‌ها", "اونجا": "آنجا",
    "رو": "را", "الان": "اکنون", "دیگه": "دیگر", "همش": "همه‌اش",
    "خب": "خوب", "آره": "بله", "باهاش": "با آن", "بهش": "به آن",
    "ازش": "از آن", "توش": "در آن", "روش": "روی آن", "توی": "در", "تو": "در",
    "داره": "دارد", "نداره": "ندارد", "دارن": "دارند", "ندارن": "ندارند", "دارین": "دارید",
    "باشه": "باشد", "نباشه": "نباشد", "هستن": "هستند", "نیستن": "نیستند", "هستین": "هستید",
    "شه": "شود", "نشه": "نشود", "بشه": "بشود", "کنه": "کند", "نکنه": "نکند", "بکنه": "بکند",
    "بدم": "بدهم", "بده": "بدهد", "ندم": "ندهم", "بدین": "بدهید", "بدن": "بدهند",
    "بذارم": "بگذارم", "بذاره": "بگذارد", "بزارم": "بگذارم", "بزاره": "بگذارد",
    "بیاد": "بیاید", "نیاد": "نیاید", "بیارم": "بیاورم", "بیاره": "بیاورد",
    "بتونم": "بتوانم", "نتونم": "نتوانم", "بتونه": "بتواند", "بخوام": "بخواهم", "بخواد": "بخواهد",
    "بگه": "بگوید", "بگین": "بگویید", "بره": "برود", "نره": "نرود", "برم": "بروم",
}
# Spoken present stem → written present stem, for verbs whose spoken stem differs or is short.
_STEMS = {
    "د": "ده", "ش": "شو", "ر": "رو", "خوا": "خواه", "خا": "خواه", "تون": "توان", "دون": "دان",
    "ذار": "گذار", "زار": "گذار", "گ": "گوی", "یا": "آی", "یار": "آور", "کن": "کن", "زن": "زن",
    "گیر": "گیر", "بین": "بین", "دار": "دار", "خور": "خور", "گرد": "گرد", "فرست": "فرست",
    "ساز": "ساز", "بند": "بند", "کش": "کش", "رس": "رس", "نویس": "نویس", "خون": "خوان",
    "شناس": "شناس", "پرس": "پرس", "مون": "مان", "ذر": "گذر", "گذار": "گذار",
    "چرخ": "چرخ", "پاک": "پاک", "باز": "باز", "سوز": "سوز", "شکن": "شکن",
}
# Spoken person ending → written ending.
_ENDINGS = {"م": "م", "ی": "ی", "ه": "د", "یم": "یم", "ین": "ید", "ید": "ید", "ن": "ند", "ند": "ند", "د": "د"}
_VERB = re.compile(
    "^(?P<prefix>نمی|می)" + ZWNJ + "?(?P<stem>" + "|".join(sorted(_STEMS, key=len, reverse=True)) + ")"
    + "(?P<ending>" + "|".join(sorted(_ENDINGS, key=len, reverse=True)) + ")$"
)
# ب/ن (subjunctive, negative) only before the spoken stems that differ from the written ones.
_SHORT_STEMS = ("د", "ش", "ر", "خوا", "تون", "دون", "ذار", "زار", "گ", "یا", "یار")
_SUBJUNCTIVE = re.compile(
    "^(?P<prefix>ب|ن)(?P<stem>" + "|".join(sorted(_SHORT_STEMS, key=len, reverse=True)) + ")"
    + "(?P<ending>" + "|".join(sorted(_ENDINGS, key=len, reverse=True)) + ")$"
)
_WORD = re.compile(f"[^\\W_]+(?:{ZWNJ}[^\\W_]+)*")
_SPOKEN_ENDING = re.compile("^(?P<noun>[\u0600-\u06ff]{3,}?)(?:رو|و|های|ای|ها|ا|شون|تون|مون|ه)$")


@dataclass(frozen=True)
class Formalized:
    text: str
    """The query in written Persian (unchanged where no rule applied)."""
    extra_words: tuple[str, ...] = ()
    """Stems of words with a spoken ending a rule could not decide on, to search as well."""
    changed: bool = False


def _verb(word: str) -> str | None:
    match = _VERB.match(word)
    joiner = ZWNJ
    if not match:
        match, joiner = _SUBJUNCTIVE.match(word), ""
    if not match:
        return None
    stem, ending = _STEMS[match["stem"]], _ENDINGS[match["ending"]]
    return f"{match['prefix']}{joiner}{stem}{ending}"


def formalize(text: str) -> Formalized:
    """`text` normalised (as `text.normalize`), with spoken Persian words written formally."""
    normalized = normalize(text)
    extra: dict[str, None] = {}
    changed = False

    def rewrite(match: re.Match[str]) -> str:
        nonlocal changed
        word = match.group()
        written = _WORDS.get(word) or _verb(word)
        if written is not None:
            changed |= written != word
            return written
        spoken = _SPOKEN_ENDING.match(word)
        if spoken and word not in _WORDS:
            extra[spoken["noun"]] = None
        return word

    formal = _WORD.sub(rewrite, normalized)
    return Formalized(formal, tuple(extra), changed)
