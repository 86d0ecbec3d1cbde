"""extract_document on every demo page and on a saved WordPress-style Persian article."""

from __future__ import annotations

import json

import pytest

from pilito_pipeline.app.demo import SITE_DIR
from pilito_pipeline.text import (
    Block,
    ExtractedDocument,
    ExtractionError,
    ExtractionOptions,
    detect_language,
    document_hash,
    extract_document,
)
from pilito_pipeline_tests.fixtures import read_fixture

Z = "\u200c"
SITE_BOILERPLATE = ("کوکی", "تمامی حقوق", "ورود مدیر", "All rights reserved", "uses cookies", "اطلاعیه", "Quick links")


def demo_page(path: str) -> ExtractedDocument:
    html = (SITE_DIR / path).read_text(encoding="utf-8")
    return extract_document(html, f"http://127.0.0.1:8765/{path}")


DEMO_PAGES = [
    # path, language, h1, a phrase of the main text, h2 headings expected
    ("index.html", "fa", "آموزشگاه زبان آوای نو", "از سال ۱۳۸۵ در محله ونک", ["دوره‌های ما", "چرا آوای نو؟"]),
    ("courses.html", "fa", "دوره‌های آموزش زبان", "در دوازده سطح برگزار", ["زبان عمومی بزرگسالان", "آمادگی آزمون آیلتس", "کلاس‌های کودکان"]),
    ("courses/ielts.html", "fa", "دوره آمادگی آزمون آیلتس (IELTS)", "۱۸٬۵۰۰٬۰۰۰ تومان", ["برنامه و مدت دوره", "شهریه دوره آیلتس", "آزمون آزمایشی"]),
    ("courses/general-english.html", "fa", "دوره زبان عمومی بزرگسالان", "۶٬۸۰۰٬۰۰۰ تومان", ["سطح‌ها و کتاب‌ها", "شهریه زبان عمومی"]),
    ("courses/kids.html", "fa", "كلاس‌هاي زبان انگليسي كودكان", "٤٬٥٠٠٬٠٠٠ تومان", ["برنامه كلاس‌ها", "شهريه كلاس كودكان"]),
    ("payment.html", "fa", "شرایط پرداخت و بازگشت شهریه", "در سه قسط پرداخت", ["پرداخت اقساطی", "تخفیف پرداخت یک‌جا", "انصراف و بازگشت وجه"]),
    ("scholarships.html", "fa", "بورسیه تحصیلی نخبگان آوای نو", "بیست بورسیه تحصیلی", ["چه کسانی می‌توانند درخواست دهند؟", "مهلت و روش درخواست"]),
    ("registration.html", "fa", "مراحل ثبت‌نام", "آزمون تعیین سطح رایگان است", ["گام اول: آزمون تعیین سطح", "گام دوم: انتخاب کلاس و پرداخت", "مدارک لازم"]),
    ("teachers.html", "fa", "اساتید آموزشگاه", "نمره ۸٫۵", ["دکتر مریم احمدی، مدیر آموزشی و مدرس آیلتس", "آقای رضا کریمی، مدرس زبان عمومی", "خانم سارا نوری، مدرس کودکان"]),
    ("faq.html", "fa", "پرسش‌های متداول", "اسکای‌روم", ["آیا کلاس آنلاین هم دارید؟", "اگر یک جلسه غیبت کنم چه می‌شود؟", "آیا گواهی پایان دوره می‌دهید؟", "آیا آموزشگاه پارکینگ دارد؟", "هر کلاس چند نفر است؟"]),
    ("contact.html", "fa", "تماس با ما", "کوچه نیلوفر، پلاک ۱۲", ["نشانی", "ساعات کاری", "تلفن و ایمیل"]),
    ("about.html", "fa", "درباره آموزشگاه آوای نو", "خانم شیرین رستگار", ["مجوزها", "امروز آوای نو"]),
    ("blog/index.html", "fa", "وبلاگ آموزشی آوای نو", "تجربه‌های خود را", []),
    ("blog/ielts-writing-tips.html", "mixed", "پنج نکته برای Writing Task 2 آیلتس", "Overusing linking words", ["۱. سؤال را دقیق بخوانید", "۲. ساختار چهار پاراگرافی", "۳. Coherence and Cohesion", "۴. Lexical Resource", "۵. زمان را مدیریت کنید"]),
    ("blog/daily-habits.html", "fa", "عادت‌های روزانه برای یادگیری زبان", "مرور فاصله‌دار", ["گوش دادن هر روز", "دفترچه لغت", "صحبت کردن با خودتان"]),
    ("en/index.html", "en", "Persian Language Courses for International Students", "450 US dollars", ["Levels and schedule", "Fees", "How to enrol"]),
    ("en/scholarships.html", "en", "Scholarships for International Students", "Yes, we offer scholarships", ["Who can apply", "Deadlines"]),
]


@pytest.mark.parametrize(("path", "language", "h1", "phrase", "h2"), DEMO_PAGES, ids=[p[0] for p in DEMO_PAGES])
def test_demo_page_extraction(path: str, language: str, h1: str, phrase: str, h2: list[str]) -> None:
    doc = demo_page(path)

    assert doc.language == language
    assert doc.h1 == [h1]
    assert doc.h2 == h2
    assert phrase in doc.text
    for boilerplate in SITE_BOILERPLATE:
        assert boilerplate not in doc.text, f"boilerplate {boilerplate!r} left in {path}"
    assert doc.title and doc.description and doc.keywords
    assert [b.text for b in doc.blocks if b.kind == "heading" and b.level == 2] == h2
    assert doc.text == "\n\n".join(block.text for block in doc.blocks)


def test_metadata_comes_from_the_head() -> None:
    doc = demo_page("courses/ielts.html")
    assert doc.title == "دوره آمادگی آیلتس | آوای نو"
    assert doc.description.startswith("دوره آمادگی آزمون آیلتس آکادمیک و جنرال")
    assert doc.keywords == ["آیلتس", "IELTS", "شهریه آیلتس", "آزمون آزمایشی"]
    assert doc.url == "http://127.0.0.1:8765/courses/ielts.html"


def test_tables_and_lists_become_line_blocks() -> None:
    doc = demo_page("courses/ielts.html")
    table = next(block for block in doc.blocks if block.kind == "table")
    assert table.text.splitlines() == [
        "نوع دوره | مدت | تعداد ساعت | شهریه",
        "آیلتس عادی | ۱۰ هفته | ۶۰ ساعت | ۱۸٬۵۰۰٬۰۰۰ تومان",
        "آیلتس فشرده | ۶ هفته | ۶۰ ساعت | ۲۲٬۰۰۰٬۰۰۰ تومان",
        "آزمون آزمایشی (Mock Test) | یک روز | ۳ ساعت | ۱٬۲۰۰٬۰۰۰ تومان",
    ]
    items = next(block for block in demo_page("registration.html").blocks if block.kind == "list")
    assert items.text.splitlines() == ["- کپی کارت ملی یا شناسنامه", "- یک قطعه عکس ۳×۴", "- برای کودکان: حضور یکی از والدین هنگام ثبت‌نام"]


def test_half_spaces_survive_extraction() -> None:
    """trafilatura deletes ZWNJ on its own; the extractor must give it back."""
    doc = demo_page("index.html")
    assert f"زبان{Z}آموز" in doc.text
    assert f"می{Z}نشینند" in doc.text
    assert "زبانآموز" not in doc.text


def test_saved_wordpress_article() -> None:
    doc = extract_document(read_fixture("wordpress_fa_article.html"), "https://parseh.example/blog/canada")

    assert doc.language == "fa"
    assert doc.h1 == ["راهنمای کامل اپلای تحصیلی در کانادا"]
    assert doc.h2 == ["انتخاب دانشگاه و رشته", "مدرک زبان", "هزینه‌ها و تمکن مالی", "ویزای تحصیلی"]
    assert doc.keywords == ["اپلای کانادا", "ویزای تحصیلی", "آیلتس", "هزینه تحصیل"]
    assert "انگشت‌نگاری در مرکز VFS" in doc.text
    for boilerplate in ("مشاوره رایگان", "صفحه اصلی", "مطالب مرتبط", "ممنون از مطلب", "دسته‌بندی‌ها", "کلیه حقوق", "کوکی"):
        assert boilerplate not in doc.text
    assert [b.level for b in doc.blocks if b.kind == "heading"] == [2, 3, 2, 2, 2]


def test_short_page_falls_through_the_cascade_to_the_dom_walk() -> None:
    doc = demo_page("admin/index.html")
    assert doc.extractor == "dom"
    assert doc.text == "ورود به پنل مدیریت\n\nاین صفحه فقط برای کارکنان آموزشگاه است و نباید خزیده شود."


def test_long_page_stops_at_the_first_step() -> None:
    assert demo_page("blog/daily-habits.html").extractor == "trafilatura"


def test_dom_walk_without_semantic_tags() -> None:
    html = (
        "<html><body><div class='navbar'><a href='/'>Home</a> <a href='/x'>Products</a></div>"
        "<div id='main'><h1>Opening hours</h1><p>We are open from nine to five on weekdays.</p></div>"
        "<div class='site-footer'>Copyright 2024</div></body></html>"
    )
    doc = extract_document(html, "http://example.test/hours", ExtractionOptions(min_main_text_chars=500))
    assert "We are open from nine to five on weekdays." in doc.text
    assert "Products" not in doc.text and "Copyright" not in doc.text
    assert doc.title == "Opening hours"  # no <title>: the first heading


EXTRACTION_ERRORS = [
    ("empty", "", "empty HTML"),
    ("whitespace", "  \n\t ", "empty HTML"),
    ("no main text", (SITE_DIR / "gallery.html").read_text(encoding="utf-8"), "no main text"),
    ("only navigation", "<html><body><nav><a href='/a'>A page</a><a href='/b'>B page</a></nav></body></html>", "no main text"),
    ("too large", "<p>" + "x" * 2_000 + "</p>", "HTML too large"),
]


@pytest.mark.parametrize(("case", "html", "reason"), EXTRACTION_ERRORS, ids=[e[0] for e in EXTRACTION_ERRORS])
def test_pages_without_text_raise_with_a_reason(case: str, html: str, reason: str) -> None:
    with pytest.raises(ExtractionError) as raised:
        extract_document(html, "http://example.test/page", ExtractionOptions(max_html_chars=2_000))
    assert raised.value.reason.startswith(reason)
    assert str(raised.value) == raised.value.reason


def test_no_main_text_reason_names_every_step() -> None:
    with pytest.raises(ExtractionError) as raised:
        demo_page("gallery.html")
    assert all(step in raised.value.reason for step in ("trafilatura:", "trafilatura_recall:", "dom:"))


def test_round_trip_through_json() -> None:
    doc = demo_page("courses/ielts.html")
    restored = ExtractedDocument.from_dict(json.loads(json.dumps(doc.to_dict(), ensure_ascii=False)))
    assert restored == doc
    assert all(isinstance(block, Block) for block in restored.blocks)


def test_document_hash_tracks_what_chunking_reads() -> None:
    doc = demo_page("faq.html")
    same = demo_page("faq.html")
    assert document_hash(doc) == document_hash(same)
    moved = ExtractedDocument.from_dict({**doc.to_dict(), "url": "http://other.test/faq.html"})
    assert document_hash(moved) == document_hash(doc)
    edited = ExtractedDocument.from_dict({**doc.to_dict(), "blocks": [*doc.to_dict()["blocks"][:-1]]})
    retitled = ExtractedDocument.from_dict({**doc.to_dict(), "title": "FAQ"})
    assert len({document_hash(doc), document_hash(edited), document_hash(retitled)}) == 3


LANGUAGE_CASES = [
    ("persian", "آموزشگاه زبان آوای نو در تهران است.", "fa"),
    ("persian with a brand name", "دوره آیلتس آوای نو برای آزمون IELTS آماده می‌کند و شصت ساعت کلاس دارد.", "fa"),
    ("english", "Do you offer scholarships for international students?", "en"),
    ("mixed", "بخش Writing برای بسیاری سخت است. Always leave time to check spelling.", "mixed"),
    ("digits only", "12345", "en"),
]


@pytest.mark.parametrize(("case", "text", "language"), LANGUAGE_CASES, ids=[c[0] for c in LANGUAGE_CASES])
def test_detect_language(case: str, text: str, language: str) -> None:
    assert detect_language(text) == language
