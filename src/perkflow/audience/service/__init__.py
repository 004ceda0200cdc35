"""Use cases of the audience: segments, previews, target lists, contact lists, extraction.

One submodule per part; this package re-exports each part's public names, so callers keep
writing `from perkflow.audience import service as audience` and `audience.create_segment(...)`.
Submodules import each other directly, never through this file.
"""

from __future__ import annotations

from perkflow.audience.models import (
    ContactListEntry,
    ExtractionTemplate,
    Segment,
    SegmentVersion,
    TargetList,
)

from ._common import invalid
from .catalog import (
    VOCABULARY_LIMIT,
    catalog_for,
    feature_columns,
    load_definition_text,
    parse,
    profile_columns,
)
from .compiling import Preview, count_definition, preview_definition, sources
from .contact_lists import (
    add_to_contact_list,
    export_contact_lists,
    list_contact_list,
    remove_from_contact_list,
)
from .dispatch_reads import opted_out
from .extraction import (
    EXPORT_BATCH,
    ExtractionReport,
    Progress,
    discard_export,
    get_template,
    list_templates,
    parse_template,
    private_folder,
    prune_exports,
    run_extraction,
    save_template,
)
from .policy import (
    UniversalReport,
    contact_policy_view,
    get_contact_policy,
    get_universal_control,
    set_contact_policy,
    set_universal_control,
    universal_control_report,
)
from .segments import (
    Members,
    archive_segment,
    create_segment,
    get_segment,
    get_segment_version,
    list_segments,
    save_segment_version,
    segment_member_ids,
    segment_members,
    segment_versions,
)
from .target_lists import build_target_list, get_target_list, list_target_lists, target_list_rows

__all__ = [
    "EXPORT_BATCH",
    "VOCABULARY_LIMIT",
    "ContactListEntry",
    "ExtractionReport",
    "ExtractionTemplate",
    "Members",
    "Preview",
    "Progress",
    "Segment",
    "SegmentVersion",
    "TargetList",
    "UniversalReport",
    "add_to_contact_list",
    "archive_segment",
    "build_target_list",
    "catalog_for",
    "contact_policy_view",
    "count_definition",
    "create_segment",
    "discard_export",
    "export_contact_lists",
    "feature_columns",
    "get_contact_policy",
    "get_segment",
    "get_segment_version",
    "get_target_list",
    "get_template",
    "get_universal_control",
    "invalid",
    "list_contact_list",
    "list_segments",
    "list_target_lists",
    "list_templates",
    "load_definition_text",
    "opted_out",
    "parse",
    "parse_template",
    "preview_definition",
    "private_folder",
    "profile_columns",
    "prune_exports",
    "remove_from_contact_list",
    "run_extraction",
    "save_segment_version",
    "save_template",
    "segment_member_ids",
    "segment_members",
    "segment_versions",
    "set_contact_policy",
    "set_universal_control",
    "sources",
    "target_list_rows",
    "universal_control_report",
]
