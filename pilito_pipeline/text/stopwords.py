"""Stop words for BM25, Persian and English, stored in normalised form.

The Persian list covers prepositions, conjunctions, pronouns, auxiliaries and the question words
a chat user wraps a query in ("آیا ... چقدر است؟"); the English list is the usual function words.
Content words that carry intent in this domain (price, fee, register, شهریه, ثبت‌نام) are not here.
"""

from __future__ import annotations

from pilito_pipeline.text.normalize import normalize

_PERSIAN = """
و در به از که این آن را با است برای تا یا هم نیز اما ولی اگر چون چه چی چرا چگونه چطور چطوری کجا
کی کدام چقدر چند چندم آیا بله نه خیر هست هستند نیست نیستند بود بودند باشد باشند شد شده شود شوند
می نمی بی خود خودش خودم خودت خودمان من تو او ما شما ایشان آنها اینها آنان ایشون شان مان تان
اش ام ات ای ی یک یه هر همه همین همان چنین چنان دیگر دیگری باید نباید کرد کرده کند کنند کنید
کنیم کنم میکنم دارد دارند دارید داریم دارم داشت داشته است اند ایم اید ام بر روی زیر پیش پس بین
میان درباره طی توسط مثل مانند جز غیر بدون حتی فقط تنها خیلی بسیار کمی زیاد همچنین سپس آنگاه
وقتی زمانی اینکه آنکه چرا که زیرا لذا بنابراین پس اینجا آنجا اکنون حالا الان ها های هایی را
رو نیز شاید لطفا لطفاً ممنون مرسی سلام اون این‌ها آن‌ها ایا چیست کیست کجاست
"""

_ENGLISH = """
a an the and or but if then else of at by for with about against between into through during
before after above below to from up down in out on off over under again further once here there
when where why how all any both each few more most other some such no nor not only own same so
than too very can will just should now is are was were be been being have has had having do does
did doing i me my myself we our ours you your yours he him his she her it its they them their
what which who whom this that these those am would could shall may might must let lets s t don
please hi hello thanks thank yes ok okay also as
"""

PERSIAN_STOP_WORDS: frozenset[str] = frozenset(normalize(word) for word in _PERSIAN.split())
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(_ENGLISH.split())
STOP_WORDS: frozenset[str] = PERSIAN_STOP_WORDS | ENGLISH_STOP_WORDS
