"""Imports every capability's models so metadata and migrations see all tables."""

from perkflow.audience import models as audience_models
from perkflow.campaigns import models as campaign_models
from perkflow.catalog import models as catalog_models
from perkflow.channels import models as channel_models
from perkflow.coupons import models as coupon_models
from perkflow.envelopes import models as envelope_models
from perkflow.grants import models as grant_models
from perkflow.membership import models as membership_models
from perkflow.org import models as org_models
from perkflow.subscribers import models as subscriber_models

__all__ = [
    "audience_models",
    "campaign_models",
    "catalog_models",
    "channel_models",
    "coupon_models",
    "envelope_models",
    "grant_models",
    "membership_models",
    "org_models",
    "subscriber_models",
]
