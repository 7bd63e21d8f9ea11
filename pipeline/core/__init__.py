"""Core: settings from the environment, the error hierarchy, domain values, languages, demographic targets,
file names and keys, reading image bytes, the identity check's vocabulary.

The bottom room: imports nothing else of ``pipeline`` (only ``db.models`` for the status enums).
"""
