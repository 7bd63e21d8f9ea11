"""Which language a persona's bios are written in, by the ``lingua`` language detector.

The detector knows only the languages whose bios the review checks (``LANGUAGE_CODES``): a language it also knew
but no task is checked against could only turn a right answer into a near miss (Bosnian for Croatian, Malay for
Indonesian). It is built once per process, on first use, in lingua's low-accuracy mode (trigram models only):
the high-accuracy models take over 700 MB of memory and ~15 s to load for these languages, while the low-accuracy
ones agree with the bios' language as well on the offline bios (``tests/unit/test_language_detect.py``).
"""

from __future__ import annotations

import functools
import threading

from lingua import IsoCode639_1, LanguageDetector, LanguageDetectorBuilder

# The review's languages by the English names the app stores, as ISO 639-1 codes. Only languages the detector
# knows: a language it cannot recognise would be reported as its nearest neighbour (Nepali as Hindi), a false flag.
LANGUAGE_CODES: dict[str, str] = {
    "Afrikaans": "af", "Albanian": "sq", "Arabic": "ar", "Bengali": "bn", "Bulgarian": "bg", "Catalan": "ca",
    "Chinese": "zh", "Chinese (Simplified)": "zh", "Chinese (Traditional)": "zh", "Croatian": "hr", "Czech": "cs",
    "Danish": "da", "Dutch": "nl", "English": "en", "Estonian": "et", "Filipino": "tl", "Finnish": "fi",
    "French": "fr", "German": "de", "Greek": "el", "Gujarati": "gu", "Hebrew": "he", "Hindi": "hi",
    "Hungarian": "hu", "Indonesian": "id", "Italian": "it", "Japanese": "ja", "Korean": "ko", "Latvian": "lv",
    "Lithuanian": "lt", "Macedonian": "mk", "Mandarin": "zh", "Marathi": "mr", "Norwegian": "no", "Persian": "fa",
    "Polish": "pl", "Portuguese": "pt", "Portuguese (Brazil)": "pt", "Portuguese (Portugal)": "pt",
    "Punjabi": "pa", "Romanian": "ro", "Russian": "ru", "Slovak": "sk", "Slovenian": "sl", "Somali": "so",
    "Spanish": "es", "Swahili": "sw", "Swedish": "sv", "Tagalog": "tl", "Tamil": "ta", "Telugu": "te",
    "Thai": "th", "Turkish": "tr", "Ukrainian": "uk", "Urdu": "ur", "Vietnamese": "vi", "Welsh": "cy",
}

# lingua's codes where they differ from ours: it tells the two written forms of Norwegian apart.
_DETECTOR_CODES: dict[str, tuple[str, ...]] = {"no": ("nb", "nn")}
_OUR_CODE = {theirs: ours for ours, codes in _DETECTOR_CODES.items() for theirs in codes}

_BUILD_LOCK = threading.Lock()


@functools.cache
def _build() -> LanguageDetector:
    codes = sorted({c for ours in LANGUAGE_CODES.values() for c in _DETECTOR_CODES.get(ours, (ours,))})
    isos = [getattr(IsoCode639_1, code.upper()) for code in codes]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*isos).with_low_accuracy_mode().build()


def detector() -> LanguageDetector:
    """The process's detector, built by whichever thread asks first (its models load on first use)."""
    with _BUILD_LOCK:
        return _build()


def most_likely_language(text: str) -> tuple[str, float] | None:
    """(ISO 639-1 code, confidence in 0..1) of the most likely language of ``text``; None when the detector
    finds nothing to go on (no letters of any known language). Thread-safe."""
    values = detector().compute_language_confidence_values(text)
    if not values or values[0].value <= 0.0:
        return None
    code = values[0].language.iso_code_639_1.name.lower()
    return _OUR_CODE.get(code, code), float(values[0].value)
