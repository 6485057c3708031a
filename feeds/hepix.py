"""HEPiX image lists: the JSON that vmcaster, the EGI AppDB and vmcatcher exchange.

A HEPiX list is one JSON object ``{"hv:imagelist": {...}}`` (the keys are
listed in feeds/SCHEMA.md, section 10), signed as S/MIME (keys/smime.py).
:func:`read_hepix` maps it onto the same :class:`ImageList` an Atom list
gives, so the site agent treats both alike; :func:`render_hepix` writes one
for `vmic endorse sign --format hepix`.

Reading is strict where trust depends on it and lenient where the format
always was: identifiers, dates, version, DNs, image URL, size and SHA-512
must be present and well formed; numbers may arrive as strings (AppDB writes
``"hv:size": "121243136"``); a key that appears twice is rejected (two
readers could take different values); descriptive keys may be missing; keys
vmic does not know (``ad:*``, ``hv:ram_minimum``, ...) are kept, as text, in
``extra`` and reach hooks.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from feeds.atom import format_time
from feeds.model import (
    ImageEntry,
    ImageList,
    check_text,
    check_token,
    check_url,
    image_id,
    list_id,
    sha512_hex,
)
from keys.dn import DistinguishedName
from keys.errors import ConfigError, ListFormatError, outside_bytes
from keys.limits import DEFAULT_LIMITS, Limits

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_WHOLE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_MAX_SIZE = 2**63 - 1

# Keys read into the model; every other key of an image or of the list goes to ``extra``.
_LIST_KEYS = {
    "dc:identifier",
    "dc:title",
    "dc:description",
    "dc:date:created",
    "dc:date:expires",
    "hv:version",
    "hv:uri",
    "hv:endorser",
    "hv:images",
    "ad:vo",
}
_IMAGE_KEYS = {
    "dc:identifier",
    "dc:title",
    "dc:description",
    "hv:uri",
    "hv:size",
    "sl:checksum:sha512",
    "hv:format",
    "hv:hypervisor",
    "hv:version",
    "sl:arch",
    "sl:os",
    "sl:osname",
    "sl:osversion",
    "dc:date:expires",
    "ad:vo",
}
# ad:mpuri, ad:appid and ad:base_mpuri are read into typed fields (info_url, appliance_id,
# base_marketplace_url) and also stay in ``extra`` as written, for vmcatcher's handlers.
_DOTTED = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,4})(?:\.(0|[1-9][0-9]{0,4}))?$")
_DOTTED_MAX_MAJOR = 900_000  # 900000.99999.99999 stays below 2**53


def read_hepix(content: bytes, *, limits: Limits = DEFAULT_LIMITS) -> ImageList:
    """The image list a HEPiX JSON document describes (its signature checked elsewhere);
    ListFormatError, and nothing else, for anything that is not one."""
    with outside_bytes("the HEPiX list cannot be read", ListFormatError):
        return _read_hepix(content, limits)


def _read_hepix(content: bytes, limits: Limits) -> ImageList:
    try:
        document = json.loads(
            content.decode("utf-8-sig"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError as exc:
        raise ListFormatError(f"the HEPiX list is not UTF-8: {exc}") from exc
    except RecursionError as exc:
        raise ListFormatError("the HEPiX list nests too deeply") from exc
    except ValueError as exc:
        raise ListFormatError(f"the HEPiX list is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {"hv:imagelist"}:
        raise ListFormatError('a HEPiX list is one object {"hv:imagelist": {...}}')
    top = _Object(document["hv:imagelist"], "hv:imagelist", limits)
    endorser = _Object(top.get("hv:endorser", dict, None), "hv:endorser", limits)
    x509 = _Object(endorser.get("hv:x509", dict, None), "hv:endorser/hv:x509", limits)
    created = top.required("dc:date:created", _time)
    images = top.get("hv:images", list, None)
    if len(images) > limits.max_entries:
        raise ListFormatError(f"the list has {len(images)} images, more than {limits.max_entries}")
    list_vo = top.optional("ad:vo", _vo)
    return ImageList(
        id=top.required("dc:identifier", _list_id),
        title=top.optional("dc:title", str) or "",
        self_url=top.optional("hv:uri", _url) or "",
        updated=created,
        expires=top.required("dc:date:expires", _time),
        version=top.required("hv:version", lambda text: _list_version(text, limits)),
        endorser_dn=x509.required("hv:dn", _dn),
        issuer_dn=x509.required("hv:ca", _dn),
        author_name=x509.optional("dc:creator", str) or "",
        author_email=x509.optional("hv:email", str),
        subtitle=top.optional("dc:description", str),
        vo=list_vo,
        entries=tuple(
            _read_image(item, index, created=created, list_vo=list_vo, limits=limits)
            for index, item in enumerate(images)
        ),
        extra=top.unread(_LIST_KEYS),
    )


def _read_image(
    item: object, index: int, *, created: datetime, list_vo: str | None, limits: Limits
) -> ImageEntry:
    wrapper = _Object(item, f"hv:images[{index}]", limits)
    image = _Object(wrapper.get("hv:image", dict, None), f"hv:images[{index}]/hv:image", limits)
    if set(wrapper.value) != {"hv:image"}:
        raise ListFormatError(f'hv:images[{index}]: each image is {{"hv:image": {{...}}}}')
    identifier = image.required("dc:identifier", _image_id)
    title = image.optional("dc:title", str)
    return ImageEntry(
        id=identifier,
        # a blank title is no title: an Atom list (a site's export) cannot carry one
        title=title if title and title.strip() else identifier,
        summary=image.optional("dc:description", str) or "",
        url=image.required("hv:uri", _url),
        size=image.required("hv:size", _size),
        sha512=image.required("sl:checksum:sha512", _sha512),
        format=image.optional("hv:format", _format) or "unknown",
        updated=created,
        endorsed=created,
        hypervisor=image.optional("hv:hypervisor", str),
        arch=image.optional("sl:arch", str),
        os=image.optional("sl:os", str),
        osname=image.optional("sl:osname", str),
        osversion=image.optional("sl:osversion", str),
        version=image.optional("hv:version", str),
        expires=image.optional("dc:date:expires", _time),
        vo=image.optional("ad:vo", _vo) or list_vo,
        info_url=image.optional("ad:mpuri", _lenient_url),
        appliance_id=image.optional("ad:appid", str) or None,
        base_marketplace_url=image.optional("ad:base_mpuri", _lenient_url),
        extra=image.unread(_IMAGE_KEYS),
    )


_MISSING = object()


class _Object:
    """One JSON object of the list, with the path to it for error messages."""

    def __init__(self, value: object, where: str, limits: Limits) -> None:
        if not isinstance(value, dict):
            raise ListFormatError(f"{where} must be a JSON object")
        self.value: dict[str, Any] = value
        self.where = where
        self.limits = limits

    def get(self, key: str, kind: type, default: Any) -> Any:
        value = self.value.get(key, default)
        if value is None:
            raise ListFormatError(f"{self.where}: {key} is missing")
        if not isinstance(value, kind):
            raise ListFormatError(f"{self.where}: {key} must be a JSON {kind.__name__}")
        return value

    def optional(self, key: str, parse: Callable[[str], Any]) -> Any:
        value = self.value.get(key)
        if value is None:  # missing, or null
            return None
        return self._parse(key, value, parse)

    def required(self, key: str, parse: Callable[[str], Any]) -> Any:
        value = self.value.get(key, _MISSING)
        if value is _MISSING:
            raise ListFormatError(f"{self.where}: {key} is missing")
        return self._parse(key, value, parse)

    def _parse(self, key: str, value: object, parse: Callable[[str], Any]) -> Any:
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and len(value) <= self.limits.max_text_chars
        ):
            text = value  # what _scalar_text would return, without its calls
        else:
            text = _scalar_text(value, self.where, key, self.limits)
        try:
            return parse(text)
        except ListFormatError as exc:
            raise ListFormatError(f"{self.where}: {key}: {exc.message}") from exc

    def unread(self, known: set[str]) -> tuple[tuple[str, str], ...]:
        """The keys vmic does not read, each value as text (JSON for non-strings)."""
        out = []
        for key in sorted(set(self.value) - known):
            value = self.value[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out.append(
                (
                    _checked_text(key, self.where, key, self.limits),
                    _checked_text(text, self.where, key, self.limits),
                )
            )
        return tuple(out)


def _scalar_text(value: object, where: str, key: str, limits: Limits) -> str:
    """A string, or a number written without quotes (numbers may come either way).
    ``where`` and ``key`` name the value in an error."""
    if value.__class__ is not str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ListFormatError(f"{where}: {key} must be a string or a whole number")
        value = str(value)
    return _checked_text(value, where, key, limits)


def _checked_text(text: str, where: str, key: str, limits: Limits) -> str:
    if len(text) > limits.max_text_chars:
        raise ListFormatError(f"{where}: {key} is longer than {limits.max_text_chars} characters")
    if text.isascii() and text.isprintable():
        return text  # printable ASCII holds nothing XML cannot carry
    return check_text(text, what=f"{where}: {key}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ListFormatError(f"key {key!r} appears twice in one object")
            seen.add(key)
    return out


def _no_constant(name: str) -> None:
    raise ListFormatError(f"{name} is not a JSON number")


def _time(text: str) -> datetime:
    if not _TIME.fullmatch(text):
        raise ListFormatError(f"{text!r} is not a date-time like 2026-01-31T12:00:00Z")
    if text.isascii():  # the fields by position: what strptime reads, without its cost
        try:
            return datetime(
                int(text[0:4]),
                int(text[5:7]),
                int(text[8:10]),
                int(text[11:13]),
                int(text[14:16]),
                int(text[17:19]),
                tzinfo=UTC,
            )
        except ValueError:
            pass  # out of range: strptime says how, as it always has
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ListFormatError(f"{text!r} is not a valid date-time ({exc})") from exc


def _list_id(text: str) -> Any:
    return list_id(text.strip(), any_case=True)


def _image_id(text: str) -> Any:
    return image_id(text.strip(), any_case=True)


def _sha512(text: str) -> Any:
    return sha512_hex(text.strip(), what="sl:checksum:sha512", any_case=True)


def _size(text: str) -> int:
    if not _WHOLE.fullmatch(text) or int(text) > _MAX_SIZE:
        raise ListFormatError(f"{text!r} is not a byte count")
    return int(text)


def _list_version(text: str, limits: Limits) -> int:
    """The number vmic orders a list version by: a whole number as it is (AppDB writes
    timestamps such as 20150618211400), or a dotted MAJOR.MINOR[.PATCH] (``3.3.0``)
    component by component, as ``MAJOR * 10**10 + MINOR * 10**5 + PATCH``."""
    dotted = _DOTTED.fullmatch(text)
    if dotted is not None and int(dotted.group(1)) < _DOTTED_MAX_MAJOR:
        major, minor, patch = (int(part or 0) for part in dotted.groups())
        number = major * 10**10 + minor * 10**5 + patch
    elif _WHOLE.fullmatch(text):
        number = int(text)
    else:
        raise ListFormatError(
            f"{text!r} is not a version vmic can order: a positive whole number (AppDB's "
            "timestamps such as 20150618211400 are) or MAJOR.MINOR[.PATCH] (3.3.0), each "
            "part up to 5 digits (MAJOR up to 6); a newer list must have a higher version"
        )
    if number == 0:
        raise ListFormatError(f"{text!r}: a list version must be above 0")
    if number > limits.max_version:
        raise ListFormatError(f"{text} is above the highest list version, {limits.max_version}")
    return number


def _url(text: str) -> str:
    return check_url(text, what="URL")


def _lenient_url(text: str) -> str | None:
    """A page about the image (``ad:mpuri``): an http(s) URL, else nothing. Trust does not
    depend on it, so an odd value is not a reason to refuse the list."""
    try:
        return check_url(text, what="URL")
    except ListFormatError:
        return None


def _format(text: str) -> str:
    return check_token(text.lower(), what="hv:format")


def _vo(text: str) -> str:
    return check_token(text, what="ad:vo")


def _dn(text: str) -> DistinguishedName:
    try:
        return DistinguishedName.parse_slash(text)
    except ConfigError as exc:
        raise ListFormatError(exc.message) from exc


def render_hepix(image_list: ImageList) -> bytes:
    """The list as HEPiX JSON, with every key vmcatcher, cloudkeeper and atrope require
    (SCHEMA §10.3): values the endorser gave, else derived ones, never left out."""
    vo = list_vo(image_list)
    derived = _derived_image_keys(image_list)
    images = []
    for entry in image_list.entries:
        image: dict[str, Any] = {
            **derived,
            "ad:mpuri": entry.info_url or f"{image_list.self_url}#{entry.id}",
            **dict(entry.extra),
        }
        image.update(
            {
                "dc:identifier": entry.id,
                "dc:title": entry.title,
                "dc:description": entry.summary,
                "hv:uri": entry.url,
                "hv:size": entry.size,
                "sl:checksum:sha512": entry.sha512,
                "hv:format": entry.format.lower(),
                "hv:hypervisor": entry.hypervisor or "",
                "hv:version": entry.version or "",
                "sl:arch": entry.arch or "",
                "sl:os": entry.os or "",
                "sl:osname": entry.osname or "",
                "sl:osversion": entry.osversion or "",
                "sl:comments": dict(entry.extra).get("sl:comments", ""),
                "ad:vo": entry.vo or vo,
                "dc:date:expires": format_time(entry.expires or image_list.expires),
            }
        )
        if entry.info_url:
            image["ad:mpuri"] = entry.info_url
        for key, value in (
            ("ad:appid", entry.appliance_id),
            ("ad:base_mpuri", entry.base_marketplace_url),
        ):
            if value is not None:
                image[key] = value
        images.append({"hv:image": image})
    top: dict[str, Any] = dict(image_list.extra)
    top.update(
        {
            "dc:identifier": image_list.id,
            "dc:title": image_list.title,
            "dc:description": image_list.subtitle or "",
            "dc:source": image_list.self_url,
            "dc:date:created": format_time(image_list.updated),
            "dc:date:expires": format_time(image_list.expires),
            "hv:version": str(image_list.version),
            "hv:uri": image_list.self_url,
            "ad:vo": vo,
            "hv:endorser": {
                "hv:x509": {
                    "dc:creator": image_list.author_name,
                    "hv:ca": image_list.issuer_dn.slash(),
                    "hv:dn": image_list.endorser_dn.slash(),
                    "hv:email": image_list.author_email or "",
                }
            },
            "hv:images": images,
        }
    )
    text = json.dumps({"hv:imagelist": top}, indent=4, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def list_vo(image_list: ImageList) -> str:
    """The list's VO: its own, else the one VO all its images name (cloudkeeper reads the
    VO of a HEPiX list at list level only, so a list carries one)."""
    if image_list.vo:
        return image_list.vo
    named = sorted({entry.vo for entry in image_list.entries if entry.vo})
    if len(named) == 1:
        return named[0]
    found = f"its images name {', '.join(named)}" if named else "none is named"
    raise ConfigError(
        f"a HEPiX list is for one virtual organisation, and {found}",
        hint='set the list\'s VO (`vmic endorse init --vo VO`, or vo = "VO" under [list] in '
        "the manifest); images for several VOs go into one list per VO",
    )


def _derived_image_keys(image_list: ImageList) -> dict[str, str]:
    """The EGI AppDB keys atrope requires of every image, from what the list says of its
    endorser: the group (the list), the endorser's name, a stable id and an address."""
    email = image_list.author_email
    uri = image_list.author_uri or (f"mailto:{email}" if email else image_list.self_url)
    return {
        "ad:group": image_list.title,
        "ad:user:fullname": image_list.author_name,
        "ad:user:guid": str(uuid.uuid5(uuid.NAMESPACE_X500, image_list.endorser_dn.rfc4514())),
        "ad:user:uri": uri,
    }
