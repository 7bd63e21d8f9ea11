"""Offline personas: Faker (locale from the bio language) and templates shaped by the description.

No network. Deterministic: the same request seed gives the same batch. The description's age range
("25–40"), gender words ("women") and place ("in Lisbon") are honoured, as are per-persona demographic
slots and the names to avoid.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faker import Faker

from pipeline.core.config import Settings
from pipeline.core.domain import PersonaBatch, PersonaDraft, PersonaRequest
from pipeline.core.languages import locales_for
from pipeline.core.personas import name_key, normalise_persona

# Real cities (city|region) per Faker locale: Faker invents towns such as "Lake Franciston" in many locales.
_CITIES: dict[str, tuple[str, ...]] = {
    "en_US": (
        "Chicago|Illinois",
        "Austin|Texas",
        "Denver|Colorado",
        "Seattle|Washington",
        "Atlanta|Georgia",
        "Portland|Oregon",
        "Boston|Massachusetts",
        "Phoenix|Arizona",
        "Columbus|Ohio",
        "Miami|Florida",
    ),
    "en_GB": (
        "Manchester|England",
        "Leeds|England",
        "Bristol|England",
        "Glasgow|Scotland",
        "Cardiff|Wales",
        "Liverpool|England",
        "Edinburgh|Scotland",
        "Belfast|Northern Ireland",
        "Brighton|England",
    ),
    "pt_PT": (
        "Lisboa|Lisboa",
        "Porto|Porto",
        "Braga|Braga",
        "Coimbra|Coimbra",
        "Faro|Faro",
        "Aveiro|Aveiro",
        "Setúbal|Setúbal",
        "Évora|Évora",
        "Almada|Setúbal",
        "Amadora|Lisboa",
    ),
    "pt_BR": (
        "São Paulo|SP",
        "Rio de Janeiro|RJ",
        "Belo Horizonte|MG",
        "Curitiba|PR",
        "Recife|PE",
        "Porto Alegre|RS",
        "Salvador|BA",
        "Fortaleza|CE",
        "Brasília|DF",
        "Florianópolis|SC",
    ),
    "es_ES": (
        "Madrid|Madrid",
        "Barcelona|Cataluña",
        "Valencia|Valencia",
        "Sevilla|Andalucía",
        "Bilbao|País Vasco",
        "Zaragoza|Aragón",
        "Málaga|Andalucía",
        "Granada|Andalucía",
        "Valladolid|Castilla y León",
    ),
    "es_MX": (
        "Ciudad de México|CDMX",
        "Guadalajara|Jalisco",
        "Monterrey|Nuevo León",
        "Puebla|Puebla",
        "Mérida|Yucatán",
        "Querétaro|Querétaro",
        "Oaxaca|Oaxaca",
    ),
    "fr_FR": (
        "Paris|Île-de-France",
        "Lyon|Auvergne-Rhône-Alpes",
        "Marseille|Provence",
        "Toulouse|Occitanie",
        "Nantes|Pays de la Loire",
        "Lille|Hauts-de-France",
        "Bordeaux|Nouvelle-Aquitaine",
        "Rennes|Bretagne",
    ),
    "de_DE": (
        "Berlin|Berlin",
        "Hamburg|Hamburg",
        "München|Bayern",
        "Köln|Nordrhein-Westfalen",
        "Leipzig|Sachsen",
        "Frankfurt am Main|Hessen",
        "Stuttgart|Baden-Württemberg",
        "Dresden|Sachsen",
        "Bremen|Bremen",
    ),
    "it_IT": (
        "Roma|Lazio",
        "Milano|Lombardia",
        "Napoli|Campania",
        "Torino|Piemonte",
        "Bologna|Emilia-Romagna",
        "Firenze|Toscana",
        "Palermo|Sicilia",
        "Genova|Liguria",
        "Bari|Puglia",
    ),
    "nl_NL": (
        "Amsterdam|Noord-Holland",
        "Rotterdam|Zuid-Holland",
        "Utrecht|Utrecht",
        "Eindhoven|Noord-Brabant",
        "Groningen|Groningen",
        "Den Haag|Zuid-Holland",
    ),
    "pl_PL": (
        "Warszawa|mazowieckie",
        "Kraków|małopolskie",
        "Wrocław|dolnośląskie",
        "Gdańsk|pomorskie",
        "Poznań|wielkopolskie",
        "Łódź|łódzkie",
    ),
    "tr_TR": ("İstanbul|İstanbul", "Ankara|Ankara", "İzmir|İzmir", "Bursa|Bursa", "Antalya|Antalya"),
    "ru_RU": (
        "Москва|Москва",
        "Санкт-Петербург|Санкт-Петербург",
        "Казань|Татарстан",
        "Новосибирск|Новосибирская область",
    ),
    "uk_UA": ("Київ|Київ", "Львів|Львівська область", "Одеса|Одеська область", "Харків|Харківська область"),
    "ja_JP": ("東京|東京都", "大阪|大阪府", "京都|京都府", "福岡|福岡県", "札幌|北海道", "名古屋|愛知県"),
    "ko_KR": ("서울|서울특별시", "부산|부산광역시", "인천|인천광역시", "대구|대구광역시", "광주|광주광역시"),
    "zh_CN": ("上海|上海", "北京|北京", "广州|广东", "深圳|广东", "成都|四川", "杭州|浙江"),
    "zh_TW": ("台北|台北市", "台中|台中市", "高雄|高雄市", "台南|台南市"),
    "hi_IN": (
        "Mumbai|Maharashtra",
        "Delhi|Delhi",
        "Bengaluru|Karnataka",
        "Pune|Maharashtra",
        "Jaipur|Rajasthan",
        "Lucknow|Uttar Pradesh",
        "Kolkata|West Bengal",
        "Chennai|Tamil Nadu",
    ),
    "en_IN": ("Mumbai|Maharashtra", "Delhi|Delhi", "Bengaluru|Karnataka", "Hyderabad|Telangana", "Chennai|Tamil Nadu"),
    "ar_AA": ("القاهرة|القاهرة", "عمّان|عمّان", "الرياض|الرياض", "الدار البيضاء|الدار البيضاء", "دبي|دبي"),
    "id_ID": ("Jakarta|DKI Jakarta", "Surabaya|Jawa Timur", "Bandung|Jawa Barat", "Yogyakarta|DI Yogyakarta"),
    "vi_VN": ("Hà Nội|Hà Nội", "Thành phố Hồ Chí Minh|TP HCM", "Đà Nẵng|Đà Nẵng", "Hải Phòng|Hải Phòng"),
    "sv_SE": ("Stockholm|Stockholm", "Göteborg|Västra Götaland", "Malmö|Skåne", "Uppsala|Uppsala"),
    "fil_PH": ("Manila|Metro Manila", "Quezon City|Metro Manila", "Cebu City|Cebu", "Davao City|Davao del Sur"),
    "zu_ZA": ("Johannesburg|Gauteng", "Cape Town|Western Cape", "Durban|KwaZulu-Natal", "Pretoria|Gauteng"),
    "sw": ("Nairobi|Nairobi", "Mombasa|Mombasa", "Dar es Salaam|Dar es Salaam", "Kisumu|Kisumu"),
    "yo_NG": ("Lagos|Lagos", "Ibadan|Oyo", "Abeokuta|Ogun", "Abuja|FCT"),
}
# Broad, self-described ethnicity labels, weighted per locale where the default mix would be implausible.
_ETHNICITIES_DEFAULT = (
    ("White", 5),
    ("Black", 2),
    ("Hispanic", 2),
    ("East Asian", 1),
    ("South Asian", 1),
    ("Middle Eastern", 1),
    ("Mixed", 1),
)
_ETHNICITIES: dict[str, tuple[tuple[str, int], ...]] = {
    "pt_BR": (("Mixed", 4), ("White", 4), ("Black", 2), ("East Asian", 1)),
    "es_MX": (("Hispanic", 6), ("Mixed", 3), ("Indigenous", 1), ("White", 1)),
    "ja_JP": (("East Asian", 1),),
    "ko_KR": (("East Asian", 1),),
    "zh_CN": (("East Asian", 1),),
    "zh_TW": (("East Asian", 1),),
    "vi_VN": (("Southeast Asian", 1),),
    "id_ID": (("Southeast Asian", 1),),
    "fil_PH": (("Southeast Asian", 1),),
    "th_TH": (("Southeast Asian", 1),),
    "hi_IN": (("South Asian", 1),),
    "en_IN": (("South Asian", 1),),
    "bn_BD": (("South Asian", 1),),
    "en_PK": (("South Asian", 1),),
    "ta_IN": (("South Asian", 1),),
    "ne_NP": (("South Asian", 1),),
    "ar_AA": (("Middle Eastern", 5), ("Black", 1)),
    "fa_IR": (("Middle Eastern", 1),),
    "tr_TR": (("Middle Eastern", 3), ("White", 2)),
    "he_IL": (("Middle Eastern", 2), ("White", 2)),
    "yo_NG": (("Black", 1),),
    "sw": (("Black", 1),),
    "tw_GH": (("Black", 1),),
    "zu_ZA": (("Black", 4), ("White", 1), ("Mixed", 1)),
}
@dataclass(frozen=True)
class _Templates:
    """Bio templates and word lists of one language (bios are written in the requested language)."""

    studies: tuple[str, ...]
    hobbies: tuple[str, ...]
    schools: tuple[str, ...]  # formats with {city}, {prev_city}, {state}
    facebook: tuple[str, ...]
    instagram: tuple[str, ...]
    x: tuple[str, ...]
    tiktok: tuple[str, ...]
    about: str
    pronouns: dict[str, str]
    topic_sentence: str


_TEMPLATES: dict[str, _Templates] = {
    "en": _Templates(
        studies=("Economics", "Nursing", "Computer Science", "Graphic Design", "Law", "Architecture", "Biology",
                 "Psychology", "Mechanical Engineering", "Marketing", "History", "Education", "Sociology"),
        hobbies=("coffee", "long walks", "indie music", "board games", "cooking", "running", "photography",
                 "hiking", "gardening", "vinyl records", "yoga", "football", "street food", "sci-fi novels"),
        schools=("University of {prev_city}", "{prev_city} Polytechnic", "{city} Community College",
                 "{state} State University"),
        facebook=("{first} | {job} at {workplace} | {city} | {topic} | Studied {study} at {school}",
                  "Living in {city}. {job}. Proud {topic_short} and fan of {hobby}. {school} alum.",
                  "{job} by day, {topic_short} always. From {prev_city}, now in {city}. Family, friends and {hobby}."),
        instagram=("{topic_short} 📍{city} | {job} | {hobby}", "{city} ✦ {hobby} ✦ {topic_short}",
                   "{job} · {city} · {hobby} lover"),
        x=("{job} in {city}. Opinions on {topic_short}, {hobby} and everything in between. Mine only.",
           "{topic_short} | {study} grad | {city} | {hobby}", "Tweeting about {hobby} and {topic_short}. {job}."),
        tiktok=("{topic_short} in {city} 🎥", "{hobby} + {topic_short} | {city}", "{job} who loves {hobby}"),
        about="{first} is a {age}-year-old {job_lower} living in {city}, {state}. Originally from {prev_city}, "
              "{pronoun} studied {study} at {school} and works at {workplace}. {topic_sentence} Outside work: {hobby}.",
        pronouns={"f": "she", "m": "he", "other": "they"},
        topic_sentence="Part of the {topic} crowd.",
    ),
    "pt": _Templates(
        studies=("Economia", "Enfermagem", "Engenharia Informática", "Design Gráfico", "Direito", "Arquitetura",
                 "Biologia", "Psicologia", "Engenharia Mecânica", "Marketing", "História", "Educação"),
        hobbies=("café", "caminhadas", "música ao vivo", "jogos de tabuleiro", "cozinhar", "correr", "fotografia",
                 "praia", "jardinagem", "discos de vinil", "ioga", "futebol", "comida de rua", "ler romances"),
        schools=("Universidade de {prev_city}", "Instituto Politécnico de {prev_city}", "Universidade de {city}",
                 "Escola Superior de {state}"),
        facebook=("{first} | {job} na {workplace} | {city} | {topic} | Estudou {study} na {school}",
                  "A viver em {city}. {job}. Apaixonado por {hobby} e por {topic_short}. Ex-aluno da {school}.",
                  "{job} durante o dia, {topic_short} sempre. De {prev_city}, agora em {city}. Família, amigos e {hobby}."),
        instagram=("{topic_short} 📍{city} | {job} | {hobby}", "{city} ✦ {hobby} ✦ {topic_short}",
                   "{job} · {city} · adoro {hobby}"),
        x=("{job} em {city}. Opiniões sobre {topic_short}, {hobby} e tudo o resto. Só minhas.",
           "{topic_short} | formado em {study} | {city} | {hobby}", "Escrevo sobre {hobby} e {topic_short}. {job}."),
        tiktok=("{topic_short} em {city} 🎥", "{hobby} + {topic_short} | {city}", "{job} que adora {hobby}"),
        about="{first} tem {age} anos, trabalha como {job_lower} e vive em {city}, {state}. Natural de {prev_city}, "
              "estudou {study} na {school} e trabalha na {workplace}. {topic_sentence} Nos tempos livres: {hobby}.",
        pronouns={"f": "ela", "m": "ele", "other": "elu"},
        topic_sentence="Faz parte do grupo {topic}.",
    ),
    "es": _Templates(
        studies=("Economía", "Enfermería", "Informática", "Diseño Gráfico", "Derecho", "Arquitectura", "Biología",
                 "Psicología", "Ingeniería Mecánica", "Marketing", "Historia", "Educación"),
        hobbies=("el café", "pasear", "la música en directo", "los juegos de mesa", "cocinar", "correr",
                 "la fotografía", "la montaña", "el huerto", "los vinilos", "el yoga", "el fútbol", "las tapas"),
        schools=("Universidad de {prev_city}", "Universidad Politécnica de {prev_city}", "Universidad de {city}",
                 "Instituto Superior de {state}"),
        facebook=("{first} | {job} en {workplace} | {city} | {topic} | Estudió {study} en la {school}",
                  "Vivo en {city}. {job}. Me encantan {hobby} y {topic_short}. Exalumno de la {school}.",
                  "{job} de día, {topic_short} siempre. De {prev_city}, ahora en {city}. Familia, amigos y {hobby}."),
        instagram=("{topic_short} 📍{city} | {job} | {hobby}", "{city} ✦ {hobby} ✦ {topic_short}",
                   "{job} · {city} · amante de {hobby}"),
        x=("{job} en {city}. Opiniones sobre {topic_short}, {hobby} y todo lo demás. Solo mías.",
           "{topic_short} | {study} | {city} | {hobby}", "Escribo sobre {hobby} y {topic_short}. {job}."),
        tiktok=("{topic_short} en {city} 🎥", "{hobby} + {topic_short} | {city}", "{job} que ama {hobby}"),
        about="{first} tiene {age} años, trabaja como {job_lower} y vive en {city}, {state}. Nacido en {prev_city}, "
              "estudió {study} en la {school} y trabaja en {workplace}. {topic_sentence} En su tiempo libre: {hobby}.",
        pronouns={"f": "ella", "m": "él", "other": "elle"},
        topic_sentence="Forma parte del grupo {topic}.",
    ),
    "fr": _Templates(
        studies=("Économie", "Soins infirmiers", "Informatique", "Design graphique", "Droit", "Architecture",
                 "Biologie", "Psychologie", "Génie mécanique", "Marketing", "Histoire", "Sciences de l'éducation"),
        hobbies=("le café", "la randonnée", "les concerts", "les jeux de société", "la cuisine", "la course à pied",
                 "la photographie", "le jardinage", "les vinyles", "le yoga", "le football", "la lecture"),
        schools=("Université de {prev_city}", "École supérieure de {prev_city}", "Université de {city}",
                 "Institut universitaire de {state}"),
        facebook=("{first} | {job} chez {workplace} | {city} | {topic} | Études de {study} à l'{school}",
                  "J'habite à {city}. {job}. Fan de {hobby} et de {topic_short}. Ancien de l'{school}.",
                  "{job} le jour, {topic_short} toujours. Originaire de {prev_city}, aujourd'hui à {city}."),
        instagram=("{topic_short} 📍{city} | {job} | {hobby}", "{city} ✦ {hobby} ✦ {topic_short}",
                   "{job} · {city} · fan de {hobby}"),
        x=("{job} à {city}. Mes avis sur {topic_short}, {hobby} et le reste. Rien que les miens.",
           "{topic_short} | diplômé en {study} | {city} | {hobby}", "Je parle de {hobby} et de {topic_short}. {job}."),
        tiktok=("{topic_short} à {city} 🎥", "{hobby} + {topic_short} | {city}", "{job} qui aime {hobby}"),
        about="{first} a {age} ans, travaille comme {job_lower} et vit à {city}, {state}. Originaire de {prev_city}, "
              "a étudié {study} à l'{school} et travaille chez {workplace}. {topic_sentence} Loisirs : {hobby}.",
        pronouns={"f": "elle", "m": "il", "other": "iel"},
        topic_sentence="Fait partie du groupe {topic}.",
    ),
    "de": _Templates(
        studies=("Wirtschaft", "Pflege", "Informatik", "Grafikdesign", "Jura", "Architektur", "Biologie",
                 "Psychologie", "Maschinenbau", "Marketing", "Geschichte", "Lehramt"),
        hobbies=("Kaffee", "Wandern", "Konzerte", "Brettspiele", "Kochen", "Laufen", "Fotografie", "Gärtnern",
                 "Schallplatten", "Yoga", "Fußball", "Lesen"),
        schools=("Universität {prev_city}", "Hochschule {prev_city}", "Universität {city}", "Fachhochschule {state}"),
        facebook=("{first} | {job} bei {workplace} | {city} | {topic} | Studium {study} an der {school}",
                  "Wohne in {city}. {job}. Liebe {hobby} und {topic_short}. Alumni der {school}.",
                  "Tagsüber {job}, immer {topic_short}. Aus {prev_city}, jetzt in {city}. Familie, Freunde und {hobby}."),
        instagram=("{topic_short} 📍{city} | {job} | {hobby}", "{city} ✦ {hobby} ✦ {topic_short}",
                   "{job} · {city} · {hobby}"),
        x=("{job} in {city}. Meinungen zu {topic_short}, {hobby} und allem dazwischen. Nur meine.",
           "{topic_short} | {study} | {city} | {hobby}", "Ich schreibe über {hobby} und {topic_short}. {job}."),
        tiktok=("{topic_short} in {city} 🎥", "{hobby} + {topic_short} | {city}", "{job} und {hobby}"),
        about="{first} ist {age} Jahre alt, arbeitet als {job} und lebt in {city}, {state}. Ursprünglich aus "
              "{prev_city}, hat {study} an der {school} studiert und arbeitet bei {workplace}. {topic_sentence} "
              "In der Freizeit: {hobby}.",
        pronouns={"f": "sie", "m": "er", "other": "they"},
        topic_sentence="Gehört zur Gruppe {topic}.",
    ),
}
_STOPWORDS = {"in", "from", "of", "the", "and", "with", "who", "aged", "age", "years", "old", "a", "an"}


def _parse_description(description: str) -> dict[str, Any]:
    """The demographic hints a description carries: age range, gender, place, and the topic words."""
    text = " ".join(description.split())
    hints: dict[str, Any] = {}
    ages = re.search(r"\b(1[3-9]|[2-9]\d)\s*(?:-|–|—|to)\s*(1[3-9]|[2-9]\d|100)\b", text)
    if ages:
        low, high = sorted((int(ages.group(1)), int(ages.group(2))))
        hints["age_range"] = (low, high)
        text = text.replace(ages.group(0), " ")
    lowered = text.casefold()
    if re.search(r"\b(women|woman|female|mothers|moms|girls|mulheres|mujeres|femmes|frauen)\b", lowered):
        hints["gender"] = "f"
    elif re.search(r"\b(men|man|male|fathers|dads|boys|homens|hombres|hommes|männer)\b", lowered):
        hints["gender"] = "m"
    place = re.search(r"\b(?:in|from|around|near)\s+([A-ZÀ-Ý][\w'À-ÿ.-]+(?:\s+[A-ZÀ-Ý][\w'À-ÿ.-]+){0,2})", text)
    if place:
        hints["city"] = place.group(1).strip(" .,")
        text = text.replace(place.group(0), " ")
    words = [w for w in re.findall(r"[\w'-]+", text) if w.casefold() not in _STOPWORDS and not w.isdigit()]
    hints["topic"] = " ".join(words[:8]) or "everyday life"
    return hints


class _Fakers(threading.local):
    def __init__(self) -> None:
        self.by_locale: dict[str, Faker] = {}

    def get(self, locale: str) -> Faker:
        if locale not in self.by_locale:
            self.by_locale[locale] = Faker(locale)
        return self.by_locale[locale]


_FAKERS = _Fakers()


class OfflinePersonaProvider:
    name = "offline"

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflinePersonaProvider:
        return cls()

    def check(self) -> tuple[bool, str]:
        return True, "offline personas (Faker + templates): no network needed"

    def generate(self, request: PersonaRequest) -> PersonaBatch:
        rng = random.Random(request.seed)
        locales = locales_for(request.language)
        hints = _parse_description(request.description)
        avoid = {name_key(*n.split(" ", 1)) if " " in n else name_key(n, "") for n in request.exclude_names}
        batch = PersonaBatch()
        for i in range(request.count):
            slot = request.slots[i] if i < len(request.slots) else {}
            for _ in range(20):  # a fresh name within a few draws
                persona = self._persona(rng, locales, hints, slot)
                key = name_key(persona.firstname, persona.lastname)
                if key not in avoid:
                    avoid.add(key)
                    batch.personas.append(persona)
                    break
        return batch

    def _persona(
        self, rng: random.Random, locales: Sequence[str], hints: dict[str, Any], slot: dict[str, Any]
    ) -> PersonaDraft:
        locale = locales[0] if rng.random() < 0.7 else rng.choice(locales)
        if slot.get("locale"):
            locale = str(slot["locale"])
        fake = _FAKERS.get(locale)
        fake.seed_instance(rng.getrandbits(48))
        gender = slot.get("gender") or hints.get("gender") or rng.choices(("f", "m", "other"), (48, 48, 4))[0]  # this order is part of a seed's output
        if "age_min" in slot:
            age = rng.randint(int(slot["age_min"]), int(slot["age_max"]))
        elif "age_range" in hints:
            age = rng.randint(*hints["age_range"])
        else:
            age = max(18, min(80, int(rng.gauss(38, 13))))
        if gender == "f":
            first = fake.first_name_female()
        elif gender == "m":
            first = fake.first_name_male()
        else:
            first = getattr(fake, "first_name_nonbinary", fake.first_name)()
        last = fake.last_name()
        ethnicity = slot.get("ethnicity") or _weighted(rng, _ETHNICITIES.get(locale, _ETHNICITIES_DEFAULT))
        city, state = self._place(rng, fake, locale)
        if hints.get("city") and rng.random() < 0.8:
            city, state = hints["city"], _region_of(hints["city"], locale) or ""
        prev_city, prev_state = self._place(rng, fake, locale)
        job = fake.job().split(",")[0].strip()
        workplace = fake.company()
        words = _TEMPLATES.get(locale.split("_")[0], _TEMPLATES["en"])
        study = rng.choice(words.studies)
        school = rng.choice(words.schools).format(city=city, prev_city=prev_city, state=state or city)
        topic = hints["topic"]
        values = {
            "first": first,
            "age": age,
            "job": job,
            "job_lower": job[:1].lower() + job[1:],
            "workplace": workplace,
            "city": city,
            "state": state or city,
            "prev_city": prev_city,
            "study": study,
            "school": school,
            "hobby": rng.choice(words.hobbies),
            "topic": topic,
            "topic_short": _shorten(topic, 40),
            "pronoun": words.pronouns.get(gender, words.pronouns["other"]),
            "topic_sentence": words.topic_sentence.format(topic=topic),
        }
        fields = {
            "firstname": first,
            "lastname": last,
            "gender": gender,
            "ethnicity": ethnicity,
            "age": age,
            "bio_facebook": rng.choice(words.facebook).format(**values),
            "bio_instagram": _shorten(rng.choice(words.instagram).format(**values), 150),
            "bio_x": _shorten(rng.choice(words.x).format(**values), 160),
            "bio_tiktok": _shorten(rng.choice(words.tiktok).format(**values), 80),
            "job_title": job,
            "workplace": workplace,
            "edu_establishment": school,
            "edu_study": study,
            "current_city": city,
            "current_state": state,
            "prev_city": prev_city,
            "prev_state": prev_state,
            "about": words.about.format(**values),
        }
        return normalise_persona(fields)

    @staticmethod
    def _place(rng: random.Random, fake: Faker, locale: str) -> tuple[str, str]:
        cities = _CITIES.get(locale)
        if cities:
            city, state = rng.choice(cities).split("|")
            return city, state
        state = ""
        for attr in ("state", "region", "province", "administrative_unit", "county"):
            if hasattr(fake, attr):
                state = str(getattr(fake, attr)())
                break
        return str(fake.city()), state or str(fake.country())


def _region_of(city: str, locale: str) -> str | None:
    """The region of a city named in the description, when our table knows it (else left empty)."""
    folded = city.casefold()
    for entry in _CITIES.get(locale, ()):
        name, region = entry.split("|")
        if name.casefold() == folded or name.casefold()[:4] == folded[:4]:
            return region
    return None


def _weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([o for o, _ in options], [w for _, w in options])[0]


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(" ,.|·✦") + "…"


class OfflinePromptProvider:
    """Grid ideas drawn from a pool, skipping ideas already used for this persona."""

    name = "offline"
    IDEAS = (
        "at a café table by the window",
        "on a city street at golden hour",
        "at home on the sofa",
        "in a park with trees behind",
        "at the beach in the wind",
        "at a friend's birthday party",
        "in the kitchen cooking",
        "on public transport",
        "at the office desk",
        "hiking on a trail",
        "at a concert in the crowd",
        "in a supermarket aisle",
        "at the gym after a workout",
        "on a balcony at dusk",
        "at a museum",
        "in the car, passenger seat",
        "at a wedding in formal clothes",
        "on a rainy day with umbrella",
        "in a library",
        "at a street market",
        "riding a bicycle",
        "walking a dog",
        "at a restaurant dinner",
        "in a mirror selfie at home",
        "at a train station",
        "in the snow",
        "at a barbecue",
        "reading in bed",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflinePromptProvider:
        return cls()

    def check(self) -> tuple[bool, str]:
        return True, "offline grid prompts: no network needed"

    def grid_prompt(self, persona: PersonaDraft, history: Sequence[str], *, seed: int) -> str:
        rng = random.Random(seed)
        used = " ".join(history)
        fresh = [idea for idea in self.IDEAS if idea not in used] or list(self.IDEAS)
        ideas = rng.sample(fresh, min(4, len(fresh)))
        return "Four amateur photos of the same person: " + "; ".join(ideas) + "."
