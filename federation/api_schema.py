"""The image object: what `GET /api/v1/images` (:mod:`federation.api`), `vmic images --json`
and `vmic image show --json` say about an image, made by one function and described by one
JSON Schema (2020-12); and the OpenAPI 3.1 document that publishes the schema.

:func:`image_object` makes it from the store's records: the image (its endorsed
``entry``, state, dates), the list version in force for its list (the endorser's DN,
the list's expiry, where this site serves the signed list) and where vmic registered
it in clouds. :func:`image_objects` reads those records from an open store.
:data:`SCHEMAS` holds the schemas of the image object, of a page of images and of an
error answer, as :func:`openapi_document` publishes them under ``components/schemas``
(their ``$ref`` s point there), beside the parameters of ``/api/v1/images``
(:data:`FILTERS`, :data:`SORTS`, the limits), which :mod:`federation.api` enforces.

URLs at this site are absolute when the site's identity gives its base URL, else
relative to the server (``/lists/...``, ``/images/sha512/...``). The module imports
no web framework, so the CLI pays nothing for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from keys.dn import display_name
from site_agent.cloud.registry import ACTIVE, DEACTIVATED, Registration, Registry
from site_agent.records import AVAILABLE, STATES, ImageRecord, ListVersion, iso
from site_agent.store import Store

_ENDORSED_TEXT = (
    *("summary", "vo", "os", "osname", "osversion", "arch", "hypervisor", "format", "version"),
    *("info_url", "appliance_id", "base_marketplace_url", "policy_override"),
)
"""Endorsed fields copied from the entry to the top of the image object (text or null)."""


@lru_cache(maxsize=256)
def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _list_path(listed: ListVersion) -> str:
    """Where `vmic serve` serves the signed list in force: ``/lists/<id>.atom`` or
    ``.smime`` for a HEPiX list (the stored file's suffix says which)."""
    suffix = ".smime" if listed.path.endswith(".smime") else ".atom"
    return f"/lists/{listed.list_id}{suffix}"


def _expires(image: ImageRecord, listed: ListVersion | None) -> str | None:
    """The image's own expiry, else that of the list version in force when it lists it."""
    own = image.expires
    if own is None and listed is not None and listed.version == image.list_version:
        return iso(listed.expires)
    return iso(own)


def _cloud(reg: Registration) -> dict[str, Any]:
    return {
        "cloud": reg.cloud,
        "glance_id": reg.glance_id,
        "state": reg.state,
        "adopted": reg.adopted,
        "sha512": reg.sha512,
        "registered_at": iso(reg.registered_at),
        "changed_at": iso(reg.changed_at),
        "withdrawn_at": iso(reg.withdrawn_at),
        "last_error": reg.last_error,
    }


def image_object(
    image: ImageRecord,
    *,
    listed: ListVersion | None,
    clouds: Sequence[Registration] = (),
    base_url: str = "",
) -> dict[str, Any]:
    """The image object of :data:`IMAGE_SCHEMA`: ``image`` with ``listed``, the version in
    force of its list (None when the site holds none), and its ``clouds`` registrations;
    ``base_url`` (no trailing slash, or empty) makes this site's URLs absolute."""
    entry = image.entry
    content = f"{base_url}/images/sha512/{image.sha512}" if image.state == AVAILABLE else None
    endorser = listed.signer if listed is not None else None
    data: dict[str, Any] = {
        "id": image.image_id,
        "title": image.title,
        "state": image.state,
        "reason": image.reason,
        "shareable": image.shareable,
        "subscription": image.subscription,
        "list_id": image.list_id,
        "list_version": image.list_version,
        "list_url": f"{base_url}{_list_path(listed)}" if listed is not None else None,
        "endorser": endorser,
        "endorser_name": display_name(endorser) if endorser else None,
        "size": image.size,
        "sha512": image.sha512,
        "content_url": content,
        "url": image.url,
    }
    data.update((key, _text(entry.get(key))) for key in _ENDORSED_TEXT)
    data["tags"] = [str(t) for t in entry.get("tags") or ()]
    data.update(
        endorsed=_text(entry.get("endorsed")),
        produced=_text(entry.get("produced")),
        expires=_expires(image, listed),
        first_seen=iso(image.first_seen),
        changed_at=iso(image.changed_at),
        approved_at=iso(image.approved_at),
        clouds=[_cloud(reg) for reg in clouds],
        entry=entry,
    )
    return data


def _registered(store: Store) -> dict[str, list[Registration]]:
    found: dict[str, list[Registration]] = defaultdict(list)
    for reg in Registry(store).all():
        found[reg.image_id].append(reg)
    return found


def image_objects(
    store: Store, *, base_url: str = "", state: str | None = None
) -> list[dict[str, Any]]:
    """Every image of the site (in ``state`` only, if given) as image objects, in the
    store's order (title, then id)."""
    lists = store.current_lists()
    clouds = _registered(store)
    return [
        image_object(
            image,
            listed=lists.get(image.list_id),
            clouds=clouds.get(image.image_id, ()),
            base_url=base_url,
        )
        for image in store.images(state=state)
    ]


# -- the JSON Schemas (2020-12) ------------------------------------------------------------
_REF = "#/components/schemas/"
_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
}


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


_SHA512 = {"type": "string", "pattern": "^[0-9a-f]{128}$"}

CLOUD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Where vmic registered the image in a cloud (the site's registry).",
    "additionalProperties": False,
    "required": [
        "cloud",
        "glance_id",
        "state",
        "adopted",
        "sha512",
        "registered_at",
        "changed_at",
        "withdrawn_at",
        "last_error",
    ],
    "properties": {
        "cloud": _string("the cloud's name in config.toml"),
        "glance_id": _string("the Glance image id"),
        "state": {"enum": [ACTIVE, DEACTIVATED], "description": "as vmic last left it"},
        "adopted": {"type": "boolean", "description": "vmic adopted it rather than made it"},
        "sha512": _SHA512,
        "registered_at": _TIME,
        "changed_at": _nullable(_TIME, "last change"),
        "withdrawn_at": _nullable(_TIME, "deactivated since"),
        "last_error": _nullable({"type": "string"}, "the last failure to reconcile it"),
    },
}

_TEXT_DOC = {
    "vo": "the VO the endorser names",
    "os": "operating system family",
    "osname": "operating system name",
    "osversion": "operating system version",
    "arch": "CPU architecture",
    "hypervisor": "hypervisor",
    "format": "disk format (raw, qcow2, vmdk, ova, ...)",
    "version": "the image's own version",
    "info_url": "the image's web page (HEPiX ad:mpuri)",
    "appliance_id": "the EGI AppDB appliance id (HEPiX ad:appid)",
    "base_marketplace_url": "the AppDB page of the base image (HEPiX ad:base_mpuri)",
    "policy_override": "why the endorser published it despite a policy-check error",
    "summary": "the endorser's summary",
}

_IMAGE_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "pattern": _UUID, "description": "the image UUID"},
    "title": _string("the endorsed title"),
    "state": {"enum": list(STATES), "description": "the image's state at this site"},
    "reason": _nullable({"type": "string"}, "why it is in this state (refused, ...)"),
    "shareable": {"type": "boolean", "description": "this site shares it with peers"},
    "subscription": _string("the site's name for the endorser's list"),
    "list_id": {"type": "string", "pattern": _UUID, "description": "the endorser's list"},
    "list_version": {
        "type": "integer",
        "minimum": 0,
        "description": "the version of the list that last listed the image",
    },
    "list_url": _nullable(
        {"type": "string"},
        "the signed list in force at this site (/lists/<id>.atom or .smime), to verify",
    ),
    "endorser": _nullable({"type": "string"}, "the signer's subject DN (slash form)"),
    "endorser_name": _nullable({"type": "string"}, "the signer's common name"),
    "size": {"type": "integer", "minimum": 0, "description": "bytes"},
    "sha512": {**_SHA512, "description": "the endorsed SHA-512 of the bytes"},
    "content_url": _nullable(
        {"type": "string"},
        "this site's verified copy (/images/sha512/<hex>), while the image is available",
    ),
    "url": _string("the endorser's download URL"),
    **{key: _nullable({"type": "string"}, text) for key, text in _TEXT_DOC.items()},
    "tags": {"type": "array", "items": {"type": "string"}},
    "endorsed": _nullable(_TIME, "endorsement date"),
    "produced": _nullable(_TIME, "production date"),
    "expires": _nullable(_TIME, "the image's own expiry, else its list's"),
    "first_seen": _TIME,
    "changed_at": _TIME,
    "approved_at": _nullable(_TIME, "when the site approved it"),
    "clouds": {"type": "array", "items": {"$ref": f"{_REF}CloudRegistration"}},
    "entry": {
        "type": "object",
        "description": "every field of the endorsed entry, as the site stored it",
        "required": ["id", "sha512", "size"],
    },
    "cache_file": _nullable(
        {"type": "string"}, "`vmic image show --json` only: the file in the site's cache"
    ),
}

IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An image this site knows, with its endorsed fields and where to get it.",
    "additionalProperties": False,
    "required": [key for key in _IMAGE_PROPERTIES if key != "cache_file"],
    "properties": _IMAGE_PROPERTIES,
}

LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One page of images.",
    "additionalProperties": False,
    "required": ["images", "count", "total", "next"],
    "properties": {
        "images": {"type": "array", "items": {"$ref": f"{_REF}Image"}},
        "count": {"type": "integer", "minimum": 0, "description": "images on this page"},
        "total": {"type": "integer", "minimum": 0, "description": "images that match"},
        "next": _nullable({"type": "string"}, "the next page; null on the last"),
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error", "detail"],
    "properties": {
        "error": {
            "enum": ["bad-parameter", "not-found", "unavailable"],
            "description": "what went wrong, for programs",
        },
        "detail": _string("what went wrong, for people"),
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Image": IMAGE_SCHEMA,
    "CloudRegistration": CLOUD_SCHEMA,
    "ImageList": LIST_SCHEMA,
    "Error": ERROR_SCHEMA,
}
"""The schemas, by their name under the OpenAPI document's ``components/schemas``."""


# -- the parameters of /api/v1/images and the OpenAPI document -------------------------------
PREFIX = "/api/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_VALUE = 256
"""Characters in one parameter value (a cursor included)."""
ALL = "all"
FILTERS: Mapping[str, str] = {
    "vo": "VO",
    "endorser": "endorser (the subject DN in slash form, or the common name)",
    "os": "operating system family",
    "osversion": "operating system version",
    "arch": "CPU architecture",
    "hypervisor": "hypervisor",
    "format": "disk format",
}
"""The filters on fields of the image object, and what each compares."""
SORTS: Mapping[str, str] = {
    "title": "the endorsed title",
    "id": "the image UUID",
    "vo": "the VO",
    "endorser": "the endorser's common name",
    "os": "operating system family",
    "osversion": "operating system version",
    "arch": "CPU architecture",
    "hypervisor": "hypervisor",
    "format": "disk format",
    "version": "the image's own version",
    "size": "size in bytes",
    "state": "the image's state at this site",
    "endorsed": "endorsement date",
    "expires": "expiry",
    "first_seen": "when this site first saw it",
    "changed_at": "its last change at this site",
}
"""What ``sort`` takes: a field of the image object (``endorser`` sorts by name)."""


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _repeatable(name: str, description: str) -> dict[str, Any]:
    return {
        **_query(name, description, {"type": "array", "items": {"type": "string"}}),
        "style": "form",
        "explode": True,
    }


def _parameters() -> list[dict[str, Any]]:
    found = [
        _repeatable(
            name,
            f"only images with this {what}, ignoring case; repeat it for any of several values",
        )
        for name, what in FILTERS.items()
    ]
    found.append(
        _repeatable(
            "state",
            "only images in this state (repeat it for several), or `all`; "
            "by default `available`: the images whose verified bytes this site serves",
        )
        | {"schema": {"type": "array", "items": {"enum": [*STATES, ALL]}}}
    )
    found += [
        _query(
            "sort",
            "the field to sort by (text ignoring case; ties go by id): "
            + "; ".join(f"`{key}`, {what}" for key, what in SORTS.items()),
            {"enum": list(SORTS), "default": "title"},
        ),
        _query(
            "order",
            "ascending or descending; images without the field come last in ascending order",
            {"enum": ["asc", "desc"], "default": "asc"},
        ),
        _query(
            "limit",
            "images per page",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        ),
        _query(
            "cursor",
            "where the page starts: take it from the `next` link of the page "
            "before (made for one sort and order)",
            {"type": "string", "maxLength": MAX_VALUE},
        ),
    ]
    return found


def _json_content(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"{_REF}{schema}"}}}


def _etag() -> dict[str, Any]:
    return {"ETag": {"description": "the SHA-256 of the body", "schema": {"type": "string"}}}


def _responses(ok: str, schema: str, *, errors: tuple[str, ...]) -> dict[str, Any]:
    answers: dict[str, Any] = {
        "200": {"description": ok, "headers": _etag(), "content": _json_content(schema)},
        "304": {"description": "not modified (If-None-Match named the ETag)", "headers": _etag()},
    }
    meaning = {"400": "a bad parameter", "404": "no such image", "503": "the store cannot be read"}
    for status in errors:
        answers[status] = {"description": meaning[status], "content": _json_content("Error")}
    return answers


def openapi_document(base_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (``servers`` names ``base_url`` when given)."""
    listing = _responses("a page of images", "ImageList", errors=("400", "503"))
    listing["200"]["headers"]["Link"] = {
        "description": 'the next page, as `<URL>; rel="next"` (absent on the last page)',
        "schema": {"type": "string"},
    }
    uuid = {"type": "string", "description": "the image UUID (any case)"}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "vmic catalogue API",
            "version": "1",
            "description": "Which endorsed images run at this site, where this site serves "
            "their verified bytes and the endorsers' signed lists (verify them with "
            "`vmic verify`), and where they are registered in clouds. Read only.",
        },
        "paths": {
            f"{PREFIX}/images": {
                "get": {
                    "operationId": "listImages",
                    "summary": "the site's images, filtered, sorted, a page at a time",
                    "parameters": _parameters(),
                    "responses": listing,
                }
            },
            f"{PREFIX}/images/{{id}}": {
                "get": {
                    "operationId": "getImage",
                    "summary": "one image, in any state",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": uuid}],
                    "responses": _responses("the image", "Image", errors=("400", "404", "503")),
                }
            },
            f"{PREFIX}/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "this document",
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document
