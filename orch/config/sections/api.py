"""The ``api`` section: where the HTTP API listens and the limits it enforces."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from orch.config.sections.base import Section, parse_size


class ApiSettings(Section):
    """The ORCH API: address, TLS, and the limits it enforces."""

    host: str = Field(default="127.0.0.1", description="Address the ORCH API listens on (ORCH_HOST); 0.0.0.0: "
                      "every address.")
    port: int = Field(default=8000, gt=0, lt=65536, description="Port the ORCH API listens on (ORCH_PORT).")
    cors_origins: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:5001", "http://localhost:5001"],
        description="Browser origins allowed to call the API with credentials (CORS).")
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "::1"],
        description="Host headers the API answers (TrustedHostMiddleware); add the name clients use, "
                    "or '*' behind a proxy that checks it.")
    max_body_bytes: int = Field(default=1024**2, gt=0, description="Larger request bodies get 413. Bytes or "
                                "a size such as 1MB.")
    tls_cert_file: str | None = Field(default=None, description="With tls_key_file: serve HTTPS (TLS 1.2+).")
    tls_key_file: str | None = Field(default=None, description="The private key of tls_cert_file.")
    sse_heartbeat_seconds: float = Field(default=15, gt=0, le=300, description="Keep-alive on SSE streams.")
    sse_poll_seconds: float = Field(default=0.25, gt=0, le=10, description="How often new events are "
                                    "looked for (one query per API process, whatever the client count).")
    health_cache_seconds: float = Field(default=2, ge=0, le=60, description="How long /health reuses a "
                                        "component check, so probes at any rate cost one check per period.")
    workers: int = Field(default=1, ge=1, le=64, description="API worker processes on one port (the guide's "
                         "uvicorn --workers). Above 1: the rate limit must be shared "
                         "(security.rate_limit.storage_url), /metrics adds up every worker, and the workers "
                         "append to logging.file, which logrotate then rotates.")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="A request line and headers larger "
                                  "than this get 431 and the connection is closed before more is read.")
    max_headers: int = Field(default=100, ge=8, le=10_000, description="More header fields get 431.")
    max_json_depth: int = Field(default=64, ge=1, le=256, description="JSON bodies nesting deeper get 422 "
                                "before any parser recurses into them.")
    max_anonymous_streams: int = Field(default=100, ge=1, description="Concurrent /events/health streams per "
                                       "API process; one more gets 503 with Retry-After.")
    max_streams_per_user: int = Field(default=20, ge=1, description="Concurrent /sse/events streams of one "
                                      "user per API process; one more gets 429 with Retry-After.")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="FORWARDED_ALLOW_IPS: the proxies (addresses or networks, comma-separated) whose "
                    "X-Forwarded-For and X-Forwarded-Proto the API believes. Empty (the default): nobody's, "
                    "so a client cannot choose the address the rate limit and the audit log see.")

    @field_validator("max_body_bytes", "max_header_bytes", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _address_list(cls, value: list[str] | str) -> list[str]:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self
