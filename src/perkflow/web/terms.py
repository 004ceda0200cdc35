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
    # grants: statuses, fulfilment kinds, outbox message kinds
    N_("pending"),
    N_("fulfilled"),
    N_("used"),
    N_("expired"),
    N_("revoked"),
    N_("failed"),
    N_("paused"),
    N_("direct_recharge"),
    N_("card_code"),
    N_("coupon"),
    N_("service"),
    N_("fulfil"),
    N_("revoke"),
]
