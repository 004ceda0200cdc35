"""Settings from PERKFLOW_* variables, with embedded defaults under PERKFLOW_HOME."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Longest value SMPP 3.4 allows in each bind field (its octet size without the closing NUL).
SMPP_LIMITS = {"smpp_system_id": 15, "smpp_password": 8, "smpp_source_addr": 20}


class Settings(BaseSettings):
    """Everything configurable; every store and generated file lives under `home`."""

    # populate_by_name: a field read from the environment under an alias is still set by name.
    model_config = SettingsConfigDict(env_prefix="PERKFLOW_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path("var"))
    database_url: str | None = None
    secret_key: str | None = None
    timezone: str = "Asia/Shanghai"
    session_max_age_s: int = 8 * 3600
    h5_link_max_age_s: int = 15 * 60
    login_max_failures: int = 5
    login_window_s: int = 15 * 60
    host: str = "127.0.0.1"
    port: int = 8000
    # Exports in the home's exports folder (full phone numbers when revealed) are deleted after
    # this long at the latest; a console download deletes its file once sent.
    export_ttl_s: int = Field(default=24 * 3600, ge=60)
    # Serve the session cookie with `Secure` (set when the console is reached over HTTPS).
    cookie_secure: bool = False
    # Addresses (comma-separated) of the reverse proxies whose X-Forwarded-For is believed;
    # empty: none, the peer address is the client (a forged header cannot dodge sign-in limits).
    trusted_proxies: str = ""
    # /metrics (docs/operations.md): with a token, served to whoever sends it as a Bearer token;
    # without, only to a scraper on this host reaching the process directly.
    metrics_token: str | None = None
    # One JSON object per log line (serve and the workers), for a log shipper; else plain text.
    log_json: bool = False
    # Channels (docs/channels.md): a channel whose peer is not configured is not opened.
    smpp_host: str | None = None
    smpp_port: int = 2775
    smpp_system_id: str = "perkflow"
    smpp_password: str = ""
    smpp_source_addr: str = "10086"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "benefits@mail.example.net"
    email_domain: str = "mail.example.net"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # The claim path (docs/coupons.md): the ASGI fast lane; the claim gate's writers (claim
    # groups in flight per process; PERKFLOW_CLAIM_LANES is its former name) and group size.
    claim_fast_lane: bool = True
    claim_writers: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=AliasChoices("perkflow_claim_writers", "perkflow_claim_lanes"),
    )
    claim_max_group: int = Field(default=64, ge=1, le=500)
    # Request bodies (web/limits.py): an API call is small; console forms carry CSV uploads.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_form_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    channel_rate_per_s: dict[str, float] = Field(
        default_factory=lambda: {"sms": 50.0, "email": 20.0, "webhook": 50.0, "in_app": 1000.0}
    )

    @field_validator("smpp_system_id", "smpp_password", "smpp_source_addr")
    @classmethod
    def _smpp_field(cls, value: str, info: ValidationInfo) -> str:
        # SMPP 3.4 fields are C-octet strings of bounded size: an SMSC refuses a longer one at
        # every bind (ESME_RINVPASWD / ESME_RINVSYSID), which otherwise shows only as failed sends.
        limit = SMPP_LIMITS[str(info.field_name)]
        if len(value) > limit:
            raise ValueError(f"at most {limit} characters in SMPP 3.4, got {len(value)}")
        if not value.isascii() or not value.isprintable():
            raise ValueError("printable ASCII only in SMPP 3.4")
        if info.field_name == "smpp_system_id" and not value:
            raise ValueError("the SMPP system_id is required")
        return value

    @cached_property
    def home_dir(self) -> Path:
        """The home, created on first use."""
        path = self.home.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def ledger_url(self) -> str:
        """The ledger's SQLAlchemy URL: PostgreSQL when configured, else SQLite in the home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_dir / 'ledger.sqlite3'}"

    @property
    def mart_dir(self) -> Path:
        """Parquet tables of the mart."""
        path = self.home_dir / "mart"
        path.mkdir(exist_ok=True)
        return path

    @property
    def truth_dir(self) -> Path:
        """Ground truth of synthetic subscribers, outside the mart so targeting cannot read it."""
        path = self.home_dir / "truth"
        path.mkdir(exist_ok=True)
        return path

    @property
    def exports_dir(self) -> Path:
        """Files written for people (extractions, reports); owner-only, like what they hold."""
        path = self.home_dir / "exports"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    @cached_property
    def master_secret(self) -> bytes:
        """The configured secret, or one generated into the home on first run."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.home_dir / "secret.key"
        if not path.exists():
            # O_EXCL: two processes starting together must not write two different keys.
            try:
                with path.open("x") as fh:
                    fh.write(secrets.token_urlsafe(48))
                path.chmod(0o600)
            except FileExistsError:
                pass
        return path.read_text().strip().encode()


def get_settings() -> Settings:
    """Settings read from the environment now."""
    return Settings()
