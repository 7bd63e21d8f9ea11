"""The bio languages offered to users (stored as the English name, as the original) and their Faker locales."""

from __future__ import annotations

from pipeline.core.errors import ValidationError

# English name -> Faker locales to draw names, places, jobs and schools from (first one preferred).
# Languages without a Faker locale of their own borrow the locale of the region where they are spoken.
_LOCALES: dict[str, tuple[str, ...]] = {
    "Afrikaans": ("zu_ZA",),
    "Albanian": ("sq_AL",),
    "Amharic": ("en_US",),
    "Arabic": ("ar_AA", "ar_EG", "ar_SA", "ar_JO"),
    "Armenian": ("hy_AM",),
    "Assamese": ("en_IN",),
    "Azerbaijani": ("az_AZ",),
    "Basque": ("es_ES",),
    "Belarusian": ("ru_RU",),
    "Bengali": ("bn_BD",),
    "Bosnian": ("bs_BA",),
    "Bulgarian": ("bg_BG",),
    "Burmese": ("en_US",),
    "Catalan": ("es_ES",),
    "Cebuano": ("fil_PH",),
    "Chinese (Simplified)": ("zh_CN",),
    "Chinese (Traditional)": ("zh_TW",),
    "Croatian": ("hr_HR",),
    "Czech": ("cs_CZ",),
    "Danish": ("da_DK",),
    "Dutch": ("nl_NL", "nl_BE"),
    "English": ("en_US", "en_GB", "en_CA", "en_AU", "en_IE", "en_NZ"),
    "Esperanto": ("en_US",),
    "Estonian": ("et_EE",),
    "Filipino": ("fil_PH", "en_PH"),
    "Finnish": ("fi_FI",),
    "French": ("fr_FR", "fr_CA", "fr_CH", "fr_BE"),
    "Galician": ("es_ES",),
    "Georgian": ("ka_GE",),
    "German": ("de_DE", "de_AT", "de_CH"),
    "Greek": ("el_GR", "el_CY"),
    "Gujarati": ("en_IN",),
    "Haitian Creole": ("fr_FR",),
    "Hausa": ("en_US",),
    "Hebrew": ("he_IL",),
    "Hindi": ("hi_IN",),
    "Hungarian": ("hu_HU",),
    "Icelandic": ("is_IS",),
    "Igbo": ("en_US",),
    "Indonesian": ("id_ID",),
    "Irish": ("ga_IE", "en_IE"),
    "Italian": ("it_IT", "it_CH"),
    "Japanese": ("ja_JP",),
    "Javanese": ("id_ID",),
    "Kannada": ("en_IN",),
    "Kazakh": ("ru_RU",),
    "Khmer": ("en_US",),
    "Kinyarwanda": ("en_US",),
    "Korean": ("ko_KR",),
    "Kurdish": ("tr_TR",),
    "Kyrgyz": ("ru_RU",),
    "Lao": ("th_TH",),
    "Latin": ("la",),
    "Latvian": ("lv_LV",),
    "Lithuanian": ("lt_LT",),
    "Luxembourgish": ("de_DE",),
    "Macedonian": ("bg_BG",),
    "Malagasy": ("fr_FR",),
    "Malay": ("id_ID",),
    "Malayalam": ("en_IN",),
    "Maltese": ("en_GB",),
    "Maori": ("en_NZ",),
    "Marathi": ("en_IN",),
    "Mongolian": ("ru_RU",),
    "Nepali": ("ne_NP",),
    "Norwegian": ("no_NO",),
    "Odia": ("or_IN",),
    "Pashto": ("fa_IR",),
    "Persian": ("fa_IR",),
    "Polish": ("pl_PL",),
    "Portuguese (Brazil)": ("pt_BR",),
    "Portuguese (Portugal)": ("pt_PT",),
    "Punjabi": ("en_IN",),
    "Quechua": ("es_ES",),
    "Romanian": ("ro_RO",),
    "Russian": ("ru_RU",),
    "Samoan": ("en_NZ",),
    "Scottish Gaelic": ("en_GB",),
    "Serbian": ("hr_HR",),
    "Sesotho": ("zu_ZA",),
    "Shona": ("zu_ZA",),
    "Sindhi": ("en_IN",),
    "Sinhala": ("en_IN",),
    "Slovak": ("sk_SK",),
    "Slovenian": ("sl_SI",),
    "Somali": ("en_US",),
    "Spanish": ("es_ES", "es_MX", "es_AR", "es_CO", "es_CL"),
    "Sundanese": ("id_ID",),
    "Swahili": ("sw",),
    "Swedish": ("sv_SE",),
    "Tajik": ("ru_RU",),
    "Tamil": ("ta_IN",),
    "Tatar": ("ru_RU",),
    "Telugu": ("en_IN",),
    "Thai": ("th_TH",),
    "Tigrinya": ("en_US",),
    "Turkish": ("tr_TR",),
    "Turkmen": ("ru_RU",),
    "Twi": ("tw_GH",),
    "Ukrainian": ("uk_UA",),
    "Urdu": ("en_PK",),
    "Uyghur": ("zh_CN",),
    "Uzbek": ("uz_UZ",),
    "Vietnamese": ("vi_VN",),
    "Welsh": ("en_GB",),
    "Xhosa": ("zu_ZA",),
    "Yiddish": ("he_IL",),
    "Yoruba": ("yo_NG",),
    "Zulu": ("zu_ZA",),
}

LANGUAGES: tuple[str, ...] = tuple(sorted(_LOCALES))

# Common ways users and old rows write a language, folded to the stored English name.
_ALIASES: dict[str, str] = {
    "chinese": "Chinese (Simplified)",
    "mandarin": "Chinese (Simplified)",
    "portuguese": "Portuguese (Portugal)",
    "brazilian portuguese": "Portuguese (Brazil)",
    "farsi": "Persian",
    "tagalog": "Filipino",
    "gaelic": "Scottish Gaelic",
    "creole": "Haitian Creole",
    "kiswahili": "Swahili",
    "bahasa indonesia": "Indonesian",
    "bahasa melayu": "Malay",
    "castilian": "Spanish",
    "flemish": "Dutch",
    "moldovan": "Romanian",
    "oriya": "Odia",
    "panjabi": "Punjabi",
    "sotho": "Sesotho",
}
_BY_FOLD = {name.casefold(): name for name in LANGUAGES} | _ALIASES

def normalise_language(value: str) -> str:
    """The stored English name for ``value`` (case-insensitive, common aliases), or ``ValidationError``."""
    text = " ".join(str(value or "").split())
    if not text:
        raise ValidationError("language is required")
    name = _BY_FOLD.get(text.casefold())
    if name is None:
        raise ValidationError(f"unknown language {text!r}: pick one of the {len(LANGUAGES)} listed languages")
    return name


def locales_for(language: str) -> tuple[str, ...]:
    """Faker locales for a stored language name (English for names we do not know, e.g. legacy rows)."""
    name = _BY_FOLD.get(str(language or "").casefold())
    return _LOCALES.get(name or "", ("en_US",))

