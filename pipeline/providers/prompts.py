"""Image prompts and the ``person_data`` payload, worded as the original system worded them."""

from __future__ import annotations

import json

from pipeline.core.domain import PersonaDraft

_GENDER_WORDS = {"m": "man", "f": "woman"}


def _who(persona: PersonaDraft) -> str:
    parts = []
    if persona.age:
        parts.append(f"{persona.age}-year-old")
    if persona.ethnicity:
        parts.append(persona.ethnicity)
    parts.append(_GENDER_WORDS.get(persona.gender, "person"))
    return " ".join(parts)


def _with_append(prompt: str, append: str) -> str:
    append = (append or "").strip()
    return f"{prompt} {append}" if append else prompt


def base_selfie_prompt(persona: PersonaDraft, append: str = "", *, include_bio: bool = True) -> str:
    """The text prompt of a new base selfie: an amateur, low-production phone selfie of this person."""
    about = (persona.bio_facebook or persona.about or "").strip() if include_bio else ""
    prompt = (
        f"An amateur selfie of a {_who(persona)}, taken with a phone camera at arm's length. "
        "Low-production, natural light, casual everyday setting, realistic skin texture, no filters, "
        "no text or watermark, one person only, face clearly visible."
    )
    if about:
        prompt += f" The person's social media bio: {about[:600]}"
    return _with_append(prompt, append)


def face_edit_prompt(persona: PersonaDraft, append: str = "") -> str:
    """The prompt that turns a library face into this persona's base selfie (same face, new context)."""
    prompt = (
        f"Edit this photo into an amateur phone selfie of a {_who(persona)}. Keep the same face and identity; "
        "change clothing, hair styling and background to fit the person. Low-production, natural light, "
        "no text or watermark, one person only."
    )
    if persona.job_title:
        prompt += f" They work as {persona.job_title[:120]}."
    return _with_append(prompt, append)


def grid_prompt_wrapper(idea: str) -> str:
    """The instruction around a grid idea: four photos of the same person in a 2x2 grid with white gutters."""
    return (
        "Create a 2x2 grid of four different amateur photos of the same person as in the reference image, "
        "separated by thin white gutters. Keep the face, identity and age identical in all four. "
        f"Scenes: {idea.strip()}"
    )


def person_data_json(persona: PersonaDraft) -> str:
    """The ``person_data`` string the Flowise prompt flow expects: names, gender, bios, ethnicity, age."""
    data = {
        "firstname": persona.firstname,
        "lastname": persona.lastname,
        "gender": persona.gender,
        "ethnicity": persona.ethnicity,
        "age": persona.age,
        "bios": {
            "facebook_bio": persona.bio_facebook,
            "instagram_bio": persona.bio_instagram,
            "x_bio": persona.bio_x,
            "tiktok_bio": persona.bio_tiktok,
            "job_title": persona.job_title,
            "current_city": persona.current_city,
        },
    }
    return json.dumps(data, ensure_ascii=False)
