"""The form fields each upload route accepts, validated after the stream ends.

Also the OpenAPI request bodies for them: the routes parse the stream themselves (no
UploadFile spooling), so the schema is declared here to keep /openapi.json truthful.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from productimport.api.auth import EMAIL_PATTERN
from productimport.api.errors import ApiError

Format = Literal["csv", "json", "jsonl"]
Preset = Literal["native", "elasticpath", "shopify", "woocommerce"]
Mode = Literal["upsert", "create", "update", "replace"]


def _bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off", ""):
            return False
    return value


MAX_WEBHOOK_CHARS = 2048  # spec.notify.webhook's maxLength
MAX_EMAIL_CHARS = 254  # spec.notify.email's maxLength


def _notify_email(value: Any) -> Any:
    """`notifyEmail`: true (the caller's or the namespace's address, as notify_email=true
    on the SaaS route), false or empty (no mail), or one plain address (addr-spec: no
    display name, no list)."""
    if not isinstance(value, str):
        return value
    flag = _bool(value)
    if flag is True:
        return True
    if flag is False:
        return None
    address = value.strip()
    if (
        len(address) > MAX_EMAIL_CHARS
        or not EMAIL_PATTERN.match(address)
        or not address.isprintable()
    ):
        raise ValueError(
            "not one mail address: send true (your token's or the namespace's address), "
            "false, or one plain address such as team@example.com"
        )
    return address


class NativeForm(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Format | None = None
    preset: Preset | None = None
    mode: Mode | None = None
    dryRun: bool = False
    # True, or the address itself; None: no mail.
    notifyEmail: Literal[True] | str | None = None
    # Checked against the egress policy by api/uploads.py (check_webhook).
    notifyWebhook: str | None = Field(None, max_length=MAX_WEBHOOK_CHARS)

    _coerce = field_validator("dryRun", mode="before")(_bool)
    _email = field_validator("notifyEmail", mode="before")(_notify_email)

    @field_validator("format", "preset", "mode", "notifyWebhook", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: Any) -> Any:
        return None if value == "" else value


class SaasForm(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Literal["csv", "json"] = "csv"
    notify_email: bool = False

    _coerce = field_validator("notify_email", mode="before")(_bool)

    @field_validator("format", mode="before")
    @classmethod
    def _default_when_empty(cls, value: Any) -> Any:
        return "csv" if value == "" else value


M = TypeVar("M", bound=BaseModel)


def parse_form(model: type[M], fields: dict[str, str]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(422, f"form field {where}: {first['msg']}", code="invalid") from exc


def multipart_body(properties: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            **properties,
                        },
                    }
                }
            },
        }
    }


NATIVE_BODY = multipart_body(
    {
        "format": {"type": "string", "enum": ["csv", "json", "jsonl"]},
        "preset": {"type": "string", "enum": ["native", "elasticpath", "shopify", "woocommerce"]},
        "mode": {"type": "string", "enum": ["upsert", "create", "update", "replace"]},
        "dryRun": {"type": "boolean", "default": False},
        "notifyEmail": {
            "type": "string",
            "maxLength": 254,
            "description": "mail the outcome: `true` (the token's address, else the "
            "namespace's), `false`, or one address; 422 where no mail is sent",
        },
        "notifyWebhook": {
            "type": "string",
            "maxLength": 2048,
            "description": "an https URL the operator POSTs the signed outcome to",
        },
    },
    "The product file (csv, json or jsonl, optionally gzipped) and import options.",
)
SAAS_BODY = multipart_body(
    {
        "format": {"type": "string", "enum": ["csv", "json"], "default": "csv"},
        "notify_email": {"type": "boolean", "default": False},
    },
    "CSV or JSON file with products",
)
PCM_BODY = multipart_body(
    {}, "The file you want to upload. Ensure that the file format is Comma Separated Values (CSV)."
)
