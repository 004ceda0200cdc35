"""Words shown on screen that come from data (statuses, roles), marked for translation."""

from perkflow.web.i18n import N_, lp_

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
    # points entries
    N_("earn"),
    N_("burn"),
    N_("bonus"),
    N_("expire"),
    N_("forfeit"),
    N_("reverse"),
]

# Who acted, as the audit log names them ("subscriber" as an actor, not the domain word).
ACTOR_KINDS = [
    lp_("actor", "staff"),
    lp_("actor", "system"),
    lp_("actor", "subscriber"),
    lp_("actor", "partner"),
    lp_("actor", "api_key"),
]

# Domain errors that carry values, catalogued with the values as {placeholders}: an error page
# matches the error's text against these and shows the translation with the values carried over.
MESSAGE_PATTERNS = [
    N_("your role may not do this ({perm})"),
    N_("province {province} is outside your region"),
    N_("region {region_code} is outside your scope"),
    N_("no subscriber {subscriber_id}"),
    N_("no benefit {benefit_id}"),
    N_("no partner {partner_id}"),
    N_("no grant {grant_id}"),
    N_("no coupon batch {batch_id}"),
    N_("no campaign {campaign_id}"),
    N_("no segment {segment_id}"),
    N_("no target list {target_list_id}"),
    N_("no red-envelope programme {program_id}"),
    N_("batch code {code} is taken"),
]
