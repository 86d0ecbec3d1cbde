"""Sentence splitting, parent/child chunking, TL;DR, manual and FAQ chunks."""

from __future__ import annotations

import pytest

from pilito_pipeline.app.demo import SITE_DIR
from pilito_pipeline.text import (
    Block,
    Chunk,
    ChunkingOptions,
    ExtractedDocument,
    blocks_from_plain_text,
    chunk_document,
    chunk_faq,
    chunk_manual_text,
    estimate_tokens,
    extract_document,
    make_tldr,
    split_sentences,
)
from pilito_pipeline_tests.fixtures import read_fixture

SMALL = ChunkingOptions(child_target_tokens=60, child_overlap_tokens=15, parent_max_tokens=200, tiny_section_tokens=12)

SENTENCE_CASES = [
    ("persian full stops", "کلاس‌ها از مهر شروع می‌شوند. ثبت‌نام از شهریور است.", ["کلاس‌ها از مهر شروع می‌شوند.", "ثبت‌نام از شهریور است."]),
    ("persian question mark", "آیا کلاس آنلاین دارید؟ بله، داریم.", ["آیا کلاس آنلاین دارید؟", "بله، داریم."]),
    ("persian semicolon", "مسیر رفت‌وآمد است؛ در مترو وقت هست.", ["مسیر رفت‌وآمد است؛", "در مترو وقت هست."]),
    ("persian comma is not a sentence end", "شنبه، دوشنبه و چهارشنبه", ["شنبه، دوشنبه و چهارشنبه"]),
    ("decimals stay whole", "نمره 6.5 لازم است. نمره ۸٫۵ عالی است.", ["نمره 6.5 لازم است.", "نمره ۸٫۵ عالی است."]),
    ("email stays whole", "Write to info@avayeno.example today. We reply fast!", ["Write to info@avayeno.example today.", "We reply fast!"]),
    ("quote after the mark", 'He asked "To what extent?" Then he left.', ['He asked "To what extent?"', "Then he left."]),
    ("mixed scripts", "بخش Writing سخت است. Always check spelling. پایان", ["بخش Writing سخت است.", "Always check spelling.", "پایان"]),
    ("line breaks end sentences", "- کپی کارت ملی\n- یک قطعه عکس", ["- کپی کارت ملی", "- یک قطعه عکس"]),
    ("ellipsis", "و غیره… بعدی", ["و غیره…", "بعدی"]),
    ("empty", "   ", []),
]


@pytest.mark.parametrize(("case", "text", "expected"), SENTENCE_CASES, ids=[c[0] for c in SENTENCE_CASES])
def test_split_sentences(case: str, text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_estimate_tokens_counts_half_space_compounds_once() -> None:
    assert estimate_tokens("می‌خواهند کتاب‌ها را بخوانند.") == 5
    assert estimate_tokens("Do you offer scholarships?") == 5


def demo_doc(path: str) -> ExtractedDocument:
    return extract_document((SITE_DIR / path).read_text(encoding="utf-8"), f"http://127.0.0.1:8765/{path}")


def article() -> ExtractedDocument:
    return extract_document(read_fixture("wordpress_fa_article.html"), "https://parseh.example/blog/canada")


def children_of(chunks: list[Chunk], parent: Chunk) -> list[Chunk]:
    return [chunk for chunk in chunks if chunk.parent_chunk_index == parent.chunk_index]


def assert_layout(chunks: list[Chunk]) -> None:
    """Indexes 0..n-1, every child points back to an earlier parent, totals agree."""
    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.metadata["chunk_index"] == chunk.chunk_index
        assert chunk.metadata["total_chunks"] == len(chunks)
        assert chunk.metadata["section_title"] == chunk.section_title
        assert chunk.word_count == len(chunk.text.split())
        if chunk.is_parent:
            assert chunk.parent_chunk_index is None
            assert children_of(chunks, chunk), "a parent without children"
        else:
            parent = chunks[chunk.parent_chunk_index]
            assert parent.is_parent and parent.chunk_index < chunk.chunk_index
            assert parent.section_title == chunk.section_title


@pytest.mark.parametrize("path", ["index.html", "courses/ielts.html", "faq.html", "blog/daily-habits.html", "en/scholarships.html"])
def test_demo_page_layout(path: str) -> None:
    chunks = chunk_document(demo_doc(path))
    assert_layout(chunks)
    assert chunks[0].is_parent


def test_children_cover_their_parent_in_order() -> None:
    chunks = chunk_document(article(), SMALL)
    assert_layout(chunks)
    for parent in (chunk for chunk in chunks if chunk.is_parent):
        position = 0
        for child in children_of(chunks, parent):
            for line in child.text.splitlines():
                found = parent.text.find(line, max(0, position - 400))
                assert found >= 0, f"child text not in its parent: {line[:40]}"
            position = parent.text.find(child.text.splitlines()[-1]) + 1


def test_chunks_never_straddle_h2_sections() -> None:
    doc = article()
    chunks = chunk_document(doc, SMALL)
    for chunk in chunks:
        headings_inside = [h2 for h2 in doc.h2 if h2 in chunk.text.splitlines()]
        assert len(headings_inside) <= 1, f"chunk {chunk.chunk_index} spans {headings_inside}"
        if headings_inside:
            assert chunk.section_title.endswith(headings_inside[0])


def test_section_titles_are_heading_paths() -> None:
    chunks = chunk_document(demo_doc("courses/ielts.html"))
    titles = list(dict.fromkeys(chunk.section_title for chunk in chunks))
    assert titles == [
        "دوره آمادگی آزمون آیلتس (IELTS)",
        "دوره آمادگی آزمون آیلتس (IELTS) › برنامه و مدت دوره",
        "دوره آمادگی آزمون آیلتس (IELTS) › شهریه دوره آیلتس",
        "دوره آمادگی آزمون آیلتس (IELTS) › آزمون آزمایشی",
    ]
    fees = [chunk for chunk in chunks if chunk.section_title.endswith("شهریه دوره آیلتس")]
    assert all("۱۸٬۵۰۰٬۰۰۰ تومان" in chunk.text for chunk in fees)


def test_children_respect_the_target_size_and_overlap() -> None:
    chunks = chunk_document(article(), SMALL)
    children = [chunk for chunk in chunks if not chunk.is_parent]
    longest_heading = max(estimate_tokens(h) for h in article().h2)
    assert all(
        estimate_tokens(child.text) <= SMALL.child_target_tokens + SMALL.child_overlap_tokens + longest_heading
        for child in children
    )
    overlapping = 0
    for parent in (chunk for chunk in chunks if chunk.is_parent):
        siblings = children_of(chunks, parent)
        for before, after in zip(siblings, siblings[1:]):
            last_sentence = split_sentences(before.text)[-1]
            if after.text.startswith(last_sentence):
                overlapping += 1
                assert estimate_tokens(last_sentence) <= SMALL.child_overlap_tokens
    assert overlapping >= 3, "consecutive children of a long section share their boundary sentence"


def test_no_overlap_when_disabled() -> None:
    options = ChunkingOptions(child_target_tokens=60, child_overlap_tokens=0, parent_max_tokens=200)
    chunks = chunk_document(article(), options)
    for parent in (chunk for chunk in chunks if chunk.is_parent):
        siblings = children_of(chunks, parent)
        rebuilt = "".join(child.text for child in siblings).replace("\n", "").replace(" ", "")
        assert rebuilt == parent.text.replace("\n", "").replace(" ", "")


def test_long_sections_split_into_several_parents() -> None:
    chunks = chunk_document(article(), SMALL)
    section = "راهنمای کامل اپلای تحصیلی در کانادا › انتخاب دانشگاه و رشته"
    parents = [chunk for chunk in chunks if chunk.is_parent and chunk.section_title == section]
    assert len(parents) >= 2
    assert all(estimate_tokens(parent.text) <= SMALL.parent_max_tokens for parent in parents)


def test_overlong_sentence_is_cut_at_clauses() -> None:
    sentence = "، ".join(f"بند شماره {i} از این جمله بسیار طولانی درباره شهریه" for i in range(30)) + "."
    doc = ExtractedDocument(
        url="http://example.test/long",
        title="جمله طولانی",
        text=sentence,
        language="fa",
        description="",
        keywords=[],
        h1=[],
        h2=[],
        blocks=[Block("paragraph", sentence)],
    )
    chunks = chunk_document(doc, SMALL)
    children = [chunk for chunk in chunks if not chunk.is_parent]
    assert len(children) > 3
    assert all(estimate_tokens(child.text) <= SMALL.child_target_tokens + SMALL.child_overlap_tokens for child in children)
    assert all(child.text.endswith(("شهریه،", "شهریه.")) for child in children)


def test_tiny_sections_merge_and_headings_never_stand_alone() -> None:
    blocks = [
        Block("heading", "ساعات کاری", 1),
        Block("heading", "شنبه تا چهارشنبه", 2),
        Block("paragraph", "از ۹ صبح تا ۸ شب."),
        Block("heading", "پنجشنبه", 2),
        Block("paragraph", "از ۹ صبح تا ۲ بعدازظهر."),
        Block("heading", "قوانین", 2),
        Block("paragraph", " ".join(["ورود با کارت زبان‌آموزی است."] * 12)),
    ]
    doc = ExtractedDocument("http://example.test/hours", "ساعات", "", "fa", "", [], ["ساعات کاری"], [], blocks)
    chunks = chunk_document(doc, SMALL)
    parents = [chunk for chunk in chunks if chunk.is_parent]
    assert parents[0].section_title == "ساعات کاری › شنبه تا چهارشنبه / پنجشنبه"
    assert parents[0].text.splitlines() == ["ساعات کاری", "شنبه تا چهارشنبه", "از ۹ صبح تا ۸ شب.", "پنجشنبه", "از ۹ صبح تا ۲ بعدازظهر."]
    assert parents[1].section_title == "ساعات کاری › قوانین"
    assert all(chunk.text.split("\n")[-1] != "قوانین" for chunk in chunks)


def test_chunk_indexes_are_stable() -> None:
    first = chunk_document(demo_doc("blog/daily-habits.html"))
    again = chunk_document(ExtractedDocument.from_dict(demo_doc("blog/daily-habits.html").to_dict()))
    assert first == again


def test_page_metadata_on_every_chunk() -> None:
    doc = demo_doc("courses/ielts.html")
    for chunk in chunk_document(doc):
        assert chunk.metadata["url"] == doc.url
        assert chunk.metadata["title"] == doc.title
        assert chunk.metadata["keywords"] == doc.keywords
        assert chunk.metadata["h1"] == doc.h1 and chunk.metadata["h2"] == doc.h2
        assert chunk.metadata["language"] == "fa"


def test_tldr_of_every_chunk_is_short() -> None:
    for chunk in chunk_document(article()):
        assert 0 < len(chunk.tldr.split()) <= 100


def test_manual_text() -> None:
    chunks = chunk_manual_text("راهنمای آموزشگاه", read_fixture("manual_fa_en.md"), SMALL)
    assert_layout(chunks)
    titles = list(dict.fromkeys(chunk.section_title for chunk in chunks))
    assert titles == [
        "راهنمای آموزشگاه › ساعات کاری و تعطیلات",
        "راهنمای آموزشگاه › کلاس‌های آنلاین",
        "راهنمای آموزشگاه › مدارک لازم برای ثبت‌نام",
        "راهنمای آموزشگاه › Refund policy in English",
    ]
    assert chunks[0].metadata == {
        "title": "راهنمای آموزشگاه",
        "language": "mixed",
        "section_title": titles[0],
        "chunk_index": 0,
        "total_chunks": len(chunks),
    }
    documents = next(chunk for chunk in chunks if chunk.section_title == titles[2] and not chunk.is_parent)
    assert "- کپی کارت ملی\n- یک قطعه عکس ۳×۴" in documents.text


def test_plain_text_blocks() -> None:
    text = "# عنوان\nخط اول\nادامه خط اول\n\n1. اول\n2. دوم\n۳. سوم\nپاراگراف بعدی"
    assert blocks_from_plain_text(text) == [
        Block("heading", "عنوان", 1),
        Block("paragraph", "خط اول ادامه خط اول"),
        Block("list", "- اول\n- دوم\n- سوم"),
        Block("paragraph", "پاراگراف بعدی"),
    ]


def test_faq_chunks_carry_the_question() -> None:
    answer = " ".join(
        f"در ترم {i} هر زبان‌آموز می‌تواند برای دو جلسه غیبت در جلسه جبرانی رایگان شرکت کند." for i in range(1, 13)
    )
    chunks = chunk_faq("  اگر یک جلسه غیبت کنم   چه می‌شود؟ ", answer, SMALL)
    assert_layout(chunks)
    assert len(chunks) > 2
    assert all(chunk.text.startswith("اگر یک جلسه غیبت کنم چه می‌شود؟\n") for chunk in chunks)
    assert all(chunk.section_title == "اگر یک جلسه غیبت کنم چه می‌شود؟" for chunk in chunks)
    assert chunks[0].metadata["question"] == "اگر یک جلسه غیبت کنم چه می‌شود؟"


def test_short_faq_is_one_parent_and_one_child() -> None:
    chunks = chunk_faq("Do you offer scholarships?", "Yes, the Open Door scholarship covers 40% of the fee.")
    assert [(c.is_parent, c.parent_chunk_index) for c in chunks] == [(True, None), (False, 0)]
    assert chunks[1].text == "Do you offer scholarships?\nYes, the Open Door scholarship covers 40% of the fee."
    assert chunks[1].metadata["language"] == "en"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: chunk_manual_text(" ", "متن"), "needs a title"),
        (lambda: chunk_manual_text("عنوان", "  \n "), "has no text"),
        (lambda: chunk_faq("", "پاسخ"), "needs a question"),
        (lambda: chunk_faq("پرسش؟", ""), "has no answer"),
        (lambda: ChunkingOptions(child_target_tokens=50, child_overlap_tokens=50), "child_overlap_tokens"),
        (lambda: ChunkingOptions(child_target_tokens=500, parent_max_tokens=100), "parent_max_tokens"),
        (lambda: make_tldr("متن", max_words=0), "max_words"),
    ],
)
def test_bad_input_is_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


TLDR_TEXT = (
    "شهریه دوره عادی آیلتس ۱۸٬۵۰۰٬۰۰۰ تومان و شهریه دوره فشرده آیلتس ۲۲٬۰۰۰٬۰۰۰ تومان است. "
    "کلاس‌های دوره آیلتس در طبقه دوم ساختمان برگزار می‌شوند و ساختمان آسانسور دارد. "
    "هزینه کتاب و جزوه آیلتس در شهریه دوره حساب شده است و جداگانه دریافت نمی‌شود. "
    "پارکینگ عمومی طبقاتی ونک در فاصله دویست متری آموزشگاه است و تا ساعت یازده شب باز است. "
    "در پایان هر دوره آیلتس یک آزمون آزمایشی کامل برگزار می‌شود که نتیجه آن تا یک هفته بعد اعلام می‌شود. "
    "دفتر آموزشگاه روزهای جمعه تعطیل است ولی به پیام‌های واتس‌اپ پاسخ داده می‌شود. "
    "شهریه دوره آیلتس را می‌توان در سه قسط پرداخت کرد و پرداخت یک‌جای شهریه پنج درصد تخفیف دارد. "
    "کتابخانه آموزشگاه بیش از دو هزار کتاب داستان انگلیسی دارد که زبان‌آموزان می‌توانند امانت بگیرند."
)


def test_tldr_is_the_whole_text_when_it_fits() -> None:
    assert make_tldr(TLDR_TEXT, max_words=500) == TLDR_TEXT


def test_tldr_keeps_short_text_whole() -> None:
    assert make_tldr("  کلاس‌ها   از مهر\nشروع می‌شوند. ") == "کلاس‌ها از مهر شروع می‌شوند."


def test_tldr_picks_central_sentences_in_order() -> None:
    tldr = make_tldr(TLDR_TEXT, max_words=45)
    assert len(tldr.split()) <= 45
    assert tldr.startswith("شهریه دوره عادی آیلتس ۱۸٬۵۰۰٬۰۰۰ تومان")
    picked = split_sentences(tldr)
    assert len(picked) >= 2 and "آیلتس" in picked[1], "the second pick stays on the text's topic"
    assert sorted(picked, key=TLDR_TEXT.index) == picked


@pytest.mark.parametrize("max_words", [1, 5, 20, 100])
def test_tldr_never_exceeds_the_word_limit(max_words: int) -> None:
    assert 0 < len(make_tldr(TLDR_TEXT, max_words).split()) <= max_words


def test_tldr_cuts_a_single_overlong_sentence() -> None:
    sentence = " ".join(["واژه"] * 150) + "."
    assert make_tldr(sentence, max_words=100) == " ".join(["واژه"] * 100)
