"""The ``security`` section: secrets, tokens, request rate limits, the password policy and login throttling."""

from __future__ import annotations

from pydantic import Field, field_validator

from orch.config.sections.base import Section, StrongSecret


class RateLimitSettings(Section):
    """The API's request rate limit."""

    requests_per_minute: int = Field(default=100, gt=0, description="Per user (per address when anonymous).")
    burst_size: int = Field(default=20, gt=0, description="At most this many of them in any one second.")
    storage_url: str | None = Field(default=None, description="redis://host:6379/0 to share the limit "
                                    "between API replicas; unset: this process's memory.")

    @field_validator("storage_url")
    @classmethod
    def _redis_or_memory(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "memory://")):
            # not the value: it may carry the store's password
            raise ValueError("must be a redis://, rediss:// or memory:// URL")
        return value


class LockoutSettings(Section):
    """Login throttling (the section keeps its historical name and keys).

    Nothing locks an account: failures are counted per (user, client address), and only that address
    waits, longer after each further failure, so an attacker elsewhere cannot lock the owner out. All
    addresses together only slow the user down, briefly, and never at an address that has logged in as
    that user before (see :mod:`orch.security.login`)."""

    max_failures: int = Field(default=5, gt=0, description="Failed logins for one user from one address "
                              "before that address must wait between attempts.")
    window_seconds: int = Field(default=900, gt=0, description="A failure count is forgotten after this "
                                "long without failures (counted from the end of the last wait).")
    lockout_seconds: int = Field(default=900, gt=0, description="The longest wait one address is given; "
                                 "the wait doubles from base_delay_seconds with each further failure.")
    base_delay_seconds: float = Field(default=1.0, gt=0, le=3600, description="The first wait, after "
                                      "max_failures failures.")
    user_max_failures: int = Field(default=20, gt=0, description="Failed logins for one user from all "
                                   "addresses together before new addresses are slowed down.")
    user_max_delay_seconds: float = Field(default=5.0, gt=0, le=60, description="The longest wait of that "
                                          "slow-down: short, so it never amounts to a lockout.")
    known_address_days: int = Field(default=30, gt=0, le=3650, description="An address that logged in as "
                                    "a user is exempt from that user's slow-down this long after its last "
                                    "success.")


class PasswordPolicySettings(Section):
    """What a new password must contain; a password breaking it is refused with every rule it breaks."""

    min_length: int = Field(default=12, ge=8, le=1024, description="Fewest characters.")
    require_uppercase: bool = Field(default=True, description="At least one upper-case letter.")
    require_lowercase: bool = Field(default=True, description="At least one lower-case letter.")
    require_numbers: bool = Field(default=True, description="At least one digit.")
    require_symbols: bool = Field(default=True, description="At least one punctuation character or space.")


class SecuritySettings(Section):
    """Secrets and tokens (generated locally when unset, required in production), and the API's limits."""

    jwt_secret: StrongSecret | None = Field(default=None, description="Signs the API's JWTs (JWT_SECRET). "
                                            "Generated locally when unset; required in production.")
    jwt_expiry: int = Field(default=3600, gt=0, description="Token lifetime in seconds.")
    webhook_secret: StrongSecret | None = Field(default=None, description="The shared secret webhook senders "
                                                "sign with (WEBHOOK_SECRET). Generated locally when unset; "
                                                "required in production.")
    mcp_token: StrongSecret | None = Field(default=None, description="The bearer token of GET /mcp/ping "
                                           "(ORCH_MCP_TOKEN); generated locally when unset.")
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    password_policy: PasswordPolicySettings = Field(default_factory=PasswordPolicySettings)
    lockout: LockoutSettings = Field(default_factory=LockoutSettings)
    webhook_tolerance_seconds: int = Field(default=300, gt=0, le=3600, description="Oldest webhook "
                                           "signature timestamp accepted.")
    identity_cache_seconds: float = Field(default=1.0, ge=0, le=60, description="How long one API process "
                                          "reuses a token's checked identity (user enabled, role) before "
                                          "reading it again; 0 reads it on every request. Changes made "
                                          "through the same process's /users apply at once.")
