"""The Hugging Face dataset card (``README.md``) of an ``hf`` export: what the data is, its counts, every field,
each generation task's request and frozen configuration, the export filter and the images found missing."""

from __future__ import annotations

import re
from typing import Any

from db.queries import UsageSummary
from pipeline.core.usage import usage_table
from pipeline.outputs.exports.records import EXPORT_COLUMNS, ExportContext, dumps, task_entries

FIELD_DESCRIPTIONS: dict[str, str] = {
    "task_id": "random id of the generation task the persona belongs to",
    "persona_id": "the persona's row id (unique within this database)",
    "batch_number": "batch of 10 personas it was generated in (from 1)",
    "slot": "position within its batch (from 0)",
    "status": "pending (images not all done), completed or failed",
    "error": "why the persona failed, if it did",
    "firstname": "first name",
    "lastname": "last name",
    "gender": "m, f, or another value",
    "ethnicity": "ethnicity as generated",
    "age": "age in years (13-100), empty if unknown",
    "bio_facebook": "Facebook bio",
    "bio_instagram": "Instagram bio",
    "bio_x": "X (Twitter) bio",
    "bio_tiktok": "TikTok bio",
    "job_title": "job title",
    "workplace": "employer or workplace",
    "edu_establishment": "school or university",
    "edu_study": "field of study",
    "current_city": "city of residence",
    "current_state": "state or region of residence",
    "prev_city": "previous city",
    "prev_state": "previous state or region",
    "about": "a longer free-text description",
    "language": "language the bios were requested in (the task's bio language)",
    "favorite": "marked as favourite by a curator",
    "tags": "curator tags",
    "rating": "curator rating 1-5, empty if unrated",
    "image_count": "number of photo variations",
    "curation": "curator decision: keep, reject or empty",
    "quality_flags": "quality checks that flagged the persona (e.g. identity_inconsistent, no_face, "
    "duplicate_identity, face_leakage, near_duplicate_bio)",
    "identity_score": "share of the photo variations whose face is within the same-person threshold of the base "
    "face (dlib 128-d embeddings); empty when the check did not run or no face was found in the base",
    "identity_worst_distance": "largest face-embedding distance of a variation to the base (same person: below "
    "the threshold in the manifest's identity settings)",
    "base_faces": "number of faces found in the base selfie (1 expected); empty when the check did not run",
    "face_leakage_distance": "distance between the base face and the face-library photo it was made from "
    "(randomize_face_base); below the leakage threshold the persona reproduces a real person",
    "base_image": "storage key of the base selfie",
    "images": "storage keys of the photo variations",
    "file_name": "(metadata.jsonl) the image file, relative to train/",
    "image_role": "(metadata.jsonl) base (the base selfie) or variation",
    "image_index": "(metadata.jsonl) 1-based number of a variation; empty for the base image",
    "source_key": "(metadata.jsonl) storage key the image was read from",
    "image_faces": "(metadata.jsonl) faces found in this image by the identity check (1 expected)",
    "image_face_distance": "(metadata.jsonl) this variation's face-embedding distance to the base face",
}
CARD_HEADER = [
    "---",
    "license: other",
    "pretty_name: " + dumps("Synthetic personas (Avatar Data Generator)"),
    "tags:",
    "- synthetic",
    "- personas",
    "- image",
    "task_categories:",
    "- image-to-text",
    "configs:",
    "- config_name: default",
    "  data_files:",
    "  - split: train",
    '    path: "train/**"',
    "---",
]


def fenced(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside (the text stays text)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def dataset_card(ctx: ExportContext) -> str:
    """The card's Markdown, written once every image is in (the counts and the missing list are final)."""
    counts = ctx.counts
    lines = [
        *CARD_HEADER,
        "",
        "# Synthetic personas",
        "",
        "Fictional social-media personas (names, demographics, four platform bios, job, education, places, an"
        ' "about" text) with a generated base selfie and photo variations of the same face, made by the Avatar'
        " Data Generator. **No real person is depicted or described.** The persona texts were written by a"
        " language model and may contain stereotypes or errors.",
        "",
        'Load it with `datasets.load_dataset("<this folder>")`. Each line of'
        " `train/metadata.jsonl` describes one image (`file_name`, relative to `train/`) and repeats its persona's"
        " fields; `persona_id` groups the images of one persona.",
        "",
        "## Counts",
        "",
        "| personas | images | images missing from storage |",
        "|---|---|---|",
        f"| {counts['personas']} | {counts['images']} | {counts['missing']} |",
        "",
    ]
    if ctx.by_status:
        lines += ["Personas by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(ctx.by_status.items())), ""]
    lines += _fields() + _tasks(ctx)
    lines += ["## Export filter", "", fenced(dumps(ctx.filter_params, indent=2), "json"), ""]
    if ctx.missing:
        lines += ["## Missing images", "", "These stored images could not be read and are not included:", ""]
        lines += [fenced(dumps(ctx.missing, indent=2), "json"), ""]
    return "\n".join(lines)


def _fields() -> list[str]:
    lines = ["## Fields", "", "| field | description |", "|---|---|"]
    for name in (
        "file_name",
        "image_role",
        "image_index",
        "source_key",
        "image_faces",
        "image_face_distance",
        *EXPORT_COLUMNS,
    ):
        if name not in ("base_image", "images"):
            lines.append(f"| `{name}` | {FIELD_DESCRIPTIONS.get(name, '')} |")
    return lines


def _tasks(ctx: ExportContext) -> list[str]:
    lines = ["", "## Generation tasks", ""]
    for task in task_entries(ctx):
        snapshot = task.pop("config_snapshot")
        description = task.pop("description")
        diversity = task.pop("diversity")
        usage = task.pop("provider_usage")
        lines += [f"### Task `{task['task_id']}`", "", "Population description:", "", fenced(description), ""]
        lines += ["Request:", "", fenced(dumps(task, indent=2), "json"), ""]
        lines += ["Configuration frozen at submit time (bio prompts, toggles, providers, models):", ""]
        lines += [fenced(dumps(snapshot, indent=2), "json") if snapshot else "(none: a legacy task)", ""]
        lines += _diversity(diversity)
        lines += _usage(usage)
    return lines


def _usage(usage: list[dict[str, Any]]) -> list[str]:
    """The task's provider calls as recorded call by call, over all its runs: — where the provider reported no
    tokens or had no price, ≥ where part of a cost is unknown."""
    if not usage:
        return []
    lines = ["Provider usage (tokens as the provider reported them; cost at the prices of the time):", "",
             "| provider | calls ok | calls failed | images | tokens | seconds | cost |",
             "|---|---|---|---|---|---|---|"]
    for row in usage_table([UsageSummary.from_dict(u) for u in usage]):
        lines.append(f"| `{row['provider']}` | {row['calls ok']} | {row['calls failed']} | {row['images']} | "
                     f"{row['tokens']} | {row['seconds']} | {row['cost']} |")
    return [*lines, ""]


def _diversity(diversity: dict[str, Any] | None) -> list[str]:
    """The task's diversity figures (computed at review time) and, where the identity check ran, the same- and
    different-person distance histograms with the equal-error rate."""
    if not diversity:
        return []
    lines = ["Diversity (computed when the task was reviewed):", "", "| figure | value | how to read it |",
             "|---|---|---|"]
    for figure in (diversity.get("figures") or {}).values():
        value = "—" if figure.get("value") is None else figure["value"]
        lines.append(f"| {figure['label']} | {value} | {figure['reading']} |")
    lines.append("")
    identity = diversity.get("identity")
    if identity:
        eer, above = identity["equal_error_rate"], identity["different_pairs_above_threshold"]
        lines += [f"Face verification: equal-error rate {eer['rate']:.1%} at distance {eer['threshold']}; "
                  f"{above['value']:.1%} of different-persona base pairs are farther apart than "
                  f"{identity['threshold']} (goal ≥ {above['goal']:.0%}).", ""]
        same, different = identity["same_person"]["histogram"], identity["different_person"]["histogram"]
        lines += [f"| distance | same person ({identity['same_person']['pairs']} pairs) | different persons "
                  f"({identity['different_person']['pairs']} pairs) |", "|---|---|---|"]
        edges = same["edges"]
        for i, (a, b) in enumerate(zip(same["counts"], different["counts"], strict=True)):
            upper = f"{edges[i + 1]:.2f}" if i + 2 < len(edges) else "…"
            lines.append(f"| {edges[i]:.2f}–{upper} | {a} | {b} |")
        lines.append("")
    return lines
