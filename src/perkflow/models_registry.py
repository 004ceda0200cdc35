"""Imports every capability's models so metadata and migrations see all tables."""

from perkflow.org import models as org_models
from perkflow.subscribers import models as subscriber_models

__all__ = ["org_models", "subscriber_models"]
