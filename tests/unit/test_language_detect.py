"""The numpy detector gives langdetect's answers exactly: same languages, same probabilities, same failures."""

from __future__ import annotations

import langdetect
import pytest
from faker import Faker
from langdetect import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from pipeline.stages.review.language import detect_langs

LOCALES = ("en_US", "pt_PT", "pt_BR", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "cs_CZ", "tr_TR",
           "ru_RU", "uk_UA", "el_GR", "he_IL", "ar_AA", "fa_IR", "hi_IN", "th_TH", "ja_JP", "ko_KR", "zh_CN",
           "zh_TW", "sv_SE", "da_DK", "fi_FI", "hu_HU", "ro_RO", "bg_BG", "id_ID", "vi_VN")


def _corpus() -> list[str]:
    texts = [
        "I love riding my bike through the city every morning before work, it keeps me sane.",
        "Adoro andar de bicicleta pela cidade todas as manhãs antes do trabalho, mantém-me são.",
        "Diogo from Lisbon (English). coffee | bikes | sunsets Opinions are my own. #3 daily rides",
        "Ciclista urbano 🚲 | café ☕ | https://example.org/diogo | diogo@example.org | Lisboa → Porto",
        "Weekend cyclist. Wochenend-Radler. Cycliste du week-end. Ciclista de fim de semana.",
        "a", "ab cd", "the",
    ]
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(7)
        texts.append(fake.text(max_nb_chars=300))
        texts.append(f"{fake.name()}, {fake.job()}, {fake.city()}. {fake.sentence()}")
        texts.append(fake.sentence(nb_words=6))
    return texts


def _langdetect(text: str) -> list[tuple[str, float]] | str:
    DetectorFactory.seed = 0
    try:
        return [(lang.lang, lang.prob) for lang in langdetect.detect_langs(text)]
    except LangDetectException as exc:
        return f"raises: {exc}"


def _ours(text: str) -> list[tuple[str, float]] | str:
    try:
        return detect_langs(text)
    except LangDetectException as exc:
        return f"raises: {exc}"


def test_same_answers_as_langdetect_bit_for_bit() -> None:
    texts = _corpus()
    ours = [_ours(t) for t in texts]
    theirs = [_langdetect(t) for t in texts]
    assert ours == theirs  # floats compared exactly
    assert len({o[0][0] for o in ours if isinstance(o, list)}) >= 20  # the corpus covers many languages
    assert sum(1 for o in ours if isinstance(o, list) and len(o) > 1) >= 3  # and some undecided texts


@pytest.mark.parametrize("text", ["", "12345 67890", "!!! ??? ...", "https://example.org/only-a-link"])
def test_featureless_texts_raise_as_langdetect_does(text: str) -> None:
    assert _ours(text) == _langdetect(text)
    assert str(_ours(text)).startswith("raises")
