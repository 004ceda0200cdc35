"""Words shown on screen that come from data (statuses, roles), marked for translation."""


def N_(message: str) -> str:  # noqa: N802  (gettext's conventional marker name)
    """Mark a string for extraction without translating it here."""
    return message


TERMS = [
    N_("active"),
    N_("suspended"),
    N_("churned"),
    N_("hq_admin"),
    N_("province_marketer"),
    N_("clerk"),
    N_("analyst"),
]
