"""Persona, prompt and image providers, chosen by name from registries (see ``registry``)."""
