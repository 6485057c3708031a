"""The catalogue API of `vmic serve` as a VO pilot factory uses it, checked against the
schemas the API itself publishes.

A site home (with an identity, so its URLs are absolute) subscribes to a loopback
endorser's signed list of six images with varied fields, approves five and syncs; the
real server answers over loopback. Every answer is validated with ``jsonschema``
against the schemas of ``/api/v1/openapi.json``, and so is `vmic images --json`, which
must give the very same image objects. Filters, sorting, pages (every image once, also
when a sync withdraws one between two pages), ETags and 304s, 400 and 404 answers, a
cloud registration, a client that verifies the signed list the API names, and
generated query strings and paths, which get 200, 400 or 404 only, always in JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import string
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry as SchemaRegistry
from referencing.jsonschema import DRAFT202012

from federation.api_schema import FILTERS, SCHEMAS, SORTS, openapi_document
from federation.cli import main
from site_agent.cloud.registry import ACTIVE, Registration, Registry
from tests.support.ca import write_identity
from tests.support.serving import Reply, ServeThread, available_site, image_data, site_world
from tests.support.site import CA_DN, ENDORSER_DN, World, image_uuid

BASE = "https://site-a.example.org:8443"
SITE_DN = "/DC=org/DC=vmic-test/OU=Sites/CN=site-a.example.org"
DOC = "urn:vmic:api:openapi"
PATHS = ("images", "images/{id}", "openapi.json")
PARAMETERS = [*FILTERS, "state", "sort", "order", "limit", "cursor"]
FIELDS: Mapping[int, Mapping[str, object]] = {
    1: {"title": "alma worker", "vo": "dteam"},
    2: {"title": "Atlas pilot", "vo": "atlas", "arch": "aarch64"},
    3: {"title": "cms worker", "vo": "cms", "osversion": "8.10", "format": "raw"},
    4: {"title": "Belle node", "vo": "atlas", "hypervisor": "Xen", "os": "FreeBSD"},
    5: {"title": "no-vo image", "vo": None},
    6: {"title": "held image"},
}
SIZES = {1: 4096, 2: 8192, 3: 1000, 4: 20000, 5: 3000, 6: 4096}
BY_TITLE = [1, 2, 4, 3, 5]
"""The available images (6 stays new) by title, ignoring case."""


def ids(*numbers: int) -> list[str]:
    return [image_uuid(n) for n in numbers]


class Served:
    """The served site, with a validator per published schema."""

    def __init__(self, world: World, server: ServeThread, schemas: dict[str, Any]) -> None:
        self.world = world
        self.server = server
        self.schemas = schemas

    def __repr__(self) -> str:  # hypothesis prints it with each example
        return f"Served({self.server.url})"

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> Reply:
        """``path``'s answer, checked against the published schema for its status."""
        reply = self.server.get(path, headers=headers, method=method)
        if method == "GET":
            check(self.schemas, reply)
        return reply

    def data(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, reply.text
        return json.loads(reply.body)

    def listed(self, query: str) -> list[str]:
        return [i["id"] for i in self.data(f"/api/v1/images?{query}")["images"]]


def validators(document: Mapping[str, Any]) -> dict[str, Any]:
    """A 2020-12 validator per schema of the OpenAPI document's components."""
    registry: SchemaRegistry[Any] = SchemaRegistry().with_resource(
        DOC, DRAFT202012.create_resource(document)
    )
    return {
        name: Draft202012Validator(
            {"$ref": f"{DOC}#/components/schemas/{name}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        for name in document["components"]["schemas"]
    }


def check(schemas: Mapping[str, Any], reply: Reply) -> None:
    """A JSON answer of the API, valid by its schema: a page, an image, or an error."""
    if reply.status == 304:
        assert reply.body == b""
        return
    assert reply.headers["Content-Type"] == "application/json"
    data = json.loads(reply.body)
    if reply.status != 200:
        schemas["Error"].validate(data)
    elif "openapi" in data:
        assert Draft202012Validator.check_schema(data["components"]["schemas"]["Image"]) is None
    elif "images" in data:
        schemas["ImageList"].validate(data)
    else:
        schemas["Image"].validate(data)


def publish_six(world: World) -> None:
    """Images 1-6 with :data:`FIELDS`; 1-5 approved and downloaded, 6 left new."""
    world.image_sizes.update(SIZES)
    lst = world.make_list(version=1, images=tuple(FIELDS))
    entries = tuple(
        replace(e, **FIELDS[n])  # type: ignore[arg-type]  # ImageEntry fields
        for n, e in zip(FIELDS, lst.entries, strict=True)
    )
    world.publish(replace(lst, entries=entries))
    assert world.subscribe() == 0
    assert world.vmic("approve", *ids(1, 2, 3, 4, 5)) == 0
    assert world.vmic("sync") == 0


@contextmanager
def serving(world: World) -> Iterator[Served]:
    """The site served, with the validators of the schemas it publishes."""
    with ServeThread(world.home) as server:
        document = json.loads(server.get("/api/v1/openapi.json").body)
        yield Served(world, server, validators(document))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, now: datetime) -> Iterator[Served]:
    """The site of six images, with an identity, served; read only."""
    tmp_path = tmp_path_factory.mktemp("api")
    with site_world(tmp_path, now) as world:
        cert, key, _chain = write_identity(tmp_path / "site-id", world.ca.issue(SITE_DN))
        assert world.vmic("site", "identity", "--cert", cert, "--key", key, "--base-url", BASE) == 0
        publish_six(world)
        with serving(world) as running:
            yield running


@pytest.fixture
def plain(tmp_path: Path, now: datetime) -> Iterator[World]:
    """A site without identity holding images 1-5, available."""
    with site_world(tmp_path, now) as world:
        available_site(world, images=(1, 2, 3, 4, 5))
        yield world


# -- the OpenAPI document ------------------------------------------------------------------
def test_the_openapi_document_is_openapi_3_1_with_valid_schemas(served: Served) -> None:
    document = served.data("/api/v1/openapi.json")

    assert document == json.loads(json.dumps(openapi_document(BASE)))
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert document["servers"] == [{"url": BASE}]
    assert sorted(document["paths"]) == [f"/api/v1/{p}" for p in PATHS]
    for path, item in document["paths"].items():
        operation = item["get"]
        assert operation["operationId"]
        assert "200" in operation["responses"], path
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in ("query", "path")
            Draft202012Validator.check_schema(parameter["schema"])
    names = [p["name"] for p in document["paths"]["/api/v1/images"]["get"]["parameters"]]
    assert names == PARAMETERS
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    refs = re.findall(r'"\$ref": "([^"]*)"', json.dumps(document))
    assert refs
    assert {r.removeprefix("#/components/schemas/") for r in refs} <= set(SCHEMAS)


# -- what an image says --------------------------------------------------------------------
def test_an_image_carries_its_endorsed_fields_and_this_sites_urls(served: Served) -> None:
    image = served.data(f"/api/v1/images/{image_uuid(2)}")

    endorsed = ("title", "vo", "arch", "size", "os", "osversion", "hypervisor", "format")
    assert [image[k] for k in endorsed] == [
        *("Atlas pilot", "atlas", "aarch64", 8192, "Linux", "9.4", "KVM", "qcow2")
    ]
    assert image["sha512"] == hashlib.sha512(image_data(served.world, 2)).hexdigest()
    assert image["content_url"] == f"{BASE}/images/sha512/{image['sha512']}"
    assert image["list_url"] == f"{BASE}/lists/{image['list_id']}.atom"
    assert (image["list_version"], image["endorser"]) == (1, ENDORSER_DN)
    assert image["endorser_name"] == "Jane Endorser"
    assert (image["state"], image["shareable"], image["clouds"]) == ("available", True, [])
    assert image["entry"]["summary"] == "A small test image number 2"
    held = served.data(f"/api/v1/images/{image_uuid(6).upper()}")
    assert (held["state"], held["content_url"], held["approved_at"]) == ("new", None, None)


def test_a_client_finds_an_image_then_verifies_its_list_and_bytes(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    (image,) = served.data("/api/v1/images?vo=cms&arch=x86_64")["images"]
    here = served.server.url.rstrip("/")  # where the site's base URL points, in a real site
    capsys.readouterr()

    trust = str(served.world.trust)
    pins = ["--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN]
    list_url = image["list_url"].replace(BASE, here)
    assert main(["verify", list_url, "--trust", trust, *pins, "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    entry = next(e for e in verified["entries"] if e["id"] == image["id"])
    assert entry["sha512"] == image["sha512"]
    assert verified["endorser"]["subject"] == image["endorser"]
    body = served.server.get(image["content_url"].removeprefix(BASE)).body
    assert hashlib.sha512(body).hexdigest() == image["sha512"]


# -- the CLI gives the same objects ----------------------------------------------------------
def test_vmic_images_json_gives_the_apis_image_objects(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert served.world.vmic("images", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert served.world.vmic("image", "show", image_uuid(3), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    everything = served.data("/api/v1/images?state=all&limit=1000")["images"]

    for image in printed:
        served.schemas["Image"].validate(image)
    served.schemas["Image"].validate(shown)
    assert sorted(printed, key=lambda i: i["id"]) == sorted(everything, key=lambda i: i["id"])
    assert shown.pop("cache_file") == str(served.world.home.images / shown["sha512"])
    assert shown == served.data(f"/api/v1/images/{image_uuid(3)}")


# -- filters and sorting -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", BY_TITLE),
        ("vo=atlas", [2, 4]),
        ("vo=ATLAS&vo=cms", [2, 4, 3]),
        ("vo=dteam&state=all", [1, 6]),
        ("arch=aarch64", [2]),
        ("os=freebsd", [4]),
        ("osversion=8.10", [3]),
        ("hypervisor=xen", [4]),
        ("format=raw", [3]),
        ("format=raw&vo=atlas", []),
        ("endorser=jane%20endorser", BY_TITLE),
        (f"endorser={quote(ENDORSER_DN)}", BY_TITLE),
        ("endorser=someone%20else", []),
        ("state=new", [6]),
        ("state=new&state=available&vo=dteam", [1, 6]),
        ("state=all", [1, 2, 4, 3, 6, 5]),
        ("state=revoked", []),
    ],
)
def test_filters_choose_by_the_fields_the_image_shows(
    served: Served, query: str, expected: list[int]
) -> None:
    assert served.listed(query) == ids(*expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort=size", [3, 5, 1, 2, 4]),
        ("sort=vo", [2, 4, 3, 1, 5]),  # no VO: last
        ("sort=id", [1, 2, 3, 4, 5]),
        ("sort=arch&state=all", [2, 1, 3, 4, 5, 6]),
    ],
)
def test_sort_orders_by_a_field_then_by_id(served: Served, query: str, expected: list[int]) -> None:
    assert served.listed(query) == ids(*expected)


@pytest.mark.parametrize("field", SORTS)
def test_every_sort_field_sorts_and_desc_is_asc_reversed(served: Served, field: str) -> None:
    ascending = served.listed(f"sort={field}&state=all")
    assert sorted(ascending) == ids(1, 2, 3, 4, 5, 6)
    assert served.listed(f"sort={field}&state=all&order=desc") == ascending[::-1]


# -- pages ---------------------------------------------------------------------------------
def walk(served: Served, query: str, *, by_header: bool = False) -> list[list[str]]:
    """Every page from the first, following ``next`` (or the Link header)."""
    pages: list[list[str]] = []
    path: str | None = f"/api/v1/images?{query}"
    while path is not None:
        reply = served.get(path)
        data = json.loads(reply.body)
        pages.append([i["id"] for i in data["images"]])
        assert data["count"] == len(data["images"])
        link = reply.headers.get("Link")
        assert (link is None) == (data["next"] is None)
        target = link[1:].removesuffix('>; rel="next"') if by_header and link else data["next"]
        path = target.removeprefix(BASE) if target else None
    return pages


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("sort", ["title", "size", "vo", "arch", "changed_at"])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pages_give_every_image_exactly_once(
    served: Served, limit: int, sort: str, order: str
) -> None:
    pages = walk(served, f"state=all&sort={sort}&order={order}&limit={limit}")
    everything = [i for page in pages for i in page]

    assert everything == served.listed(f"state=all&sort={sort}&order={order}")
    assert sorted(everything) == ids(1, 2, 3, 4, 5, 6)
    assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    assert 1 <= len(pages[-1]) <= limit


def test_the_link_header_walks_the_same_pages(served: Served) -> None:
    assert walk(served, "limit=2&vo=atlas&vo=dteam", by_header=True) == [ids(1, 2), ids(4)]
    first = served.data("/api/v1/images?limit=2&vo=atlas&vo=dteam")
    assert first["next"].startswith(f"{BASE}/api/v1/images?vo=atlas&vo=dteam&")
    assert first["total"] == 3


def test_a_cursor_survives_a_sync_that_withdraws_a_seen_image(plain: World, now: datetime) -> None:
    with serving(plain) as server:
        first = server.data("/api/v1/images?limit=2&sort=id")
        assert [i["id"] for i in first["images"]] == ids(1, 2)
        assert first["next"].startswith("/api/v1/images?")  # no identity: relative
        plain.publish(version=2, images=(2, 3, 4, 5))  # the endorser drops image 1
        assert plain.vmic("sync") == 0
        rest = server.data(first["next"])

    assert plain.states()[image_uuid(1)] == "withdrawn"
    assert [i["id"] for i in rest["images"]] == ids(3, 4)  # an offset would skip image 3


# -- validators ----------------------------------------------------------------------------
def test_an_etag_answers_304_until_the_store_changes(plain: World) -> None:
    with serving(plain) as server:
        for path in ("/api/v1/images", f"/api/v1/images/{image_uuid(5)}", "/api/v1/openapi.json"):
            first = server.get(path)
            etag = first.headers["Etag"]
            assert etag == f'"{hashlib.sha256(first.body).hexdigest()}"'
            assert first.headers["Cache-Control"] == "no-cache"
            for tags in (etag, f'"other", W/{etag}', "*"):
                again = server.get(path, headers={"If-None-Match": tags})
                assert (again.status, again.body, again.headers["Etag"]) == (304, b"", etag)
            assert server.get(path, headers={"If-None-Match": '"other"'}).status == 200
            head = server.get(path, method="HEAD")
            assert (head.status, head.body, head.headers["Etag"]) == (200, b"", etag)
        etag = server.get("/api/v1/images").headers["Etag"]
        assert plain.vmic("withdraw", image_uuid(5)) == 0
        changed = server.get("/api/v1/images", headers={"If-None-Match": etag})

    assert changed.status == 200
    assert image_uuid(5) not in {i["id"] for i in json.loads(changed.body)["images"]}


# -- where an image is registered ----------------------------------------------------------
def test_a_cloud_registration_appears_in_the_api_and_the_cli(
    plain: World, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"/api/v1/images/{image_uuid(2)}"
    with serving(plain) as server:
        before = server.data(path)
        sha512 = before["sha512"]
        with plain.store() as store, store.atomic():
            Registry(store).put(
                Registration(
                    cloud="site1",
                    glance_id="0b5c3f4e-glance",
                    image_id=image_uuid(2),
                    sha512=sha512,
                    state=ACTIVE,
                    adopted=False,
                    registered_at=now - timedelta(hours=1),
                    changed_at=now - timedelta(hours=1),
                )
            )
        after = server.data(path)
        listed = server.data("/api/v1/images?sort=id")["images"]
    capsys.readouterr()
    assert plain.vmic("images", "--json") == 0
    printed = {i["id"]: i for i in json.loads(capsys.readouterr().out)}

    assert before["clouds"] == []
    assert before["content_url"] == f"/images/sha512/{sha512}"  # no identity: relative
    clouds = after["clouds"]
    assert [(c["cloud"], c["glance_id"], c["state"], c["adopted"]) for c in clouds] == [
        ("site1", "0b5c3f4e-glance", "active", False)
    ]
    assert listed[1]["clouds"] == clouds
    assert printed[image_uuid(2)]["clouds"] == clouds


# -- bad requests --------------------------------------------------------------------------
# unknown or repeated, out of range, an Arabic-Indic five, cursors not of this API or sort
BAD_QUERIES = f"""
    sort=nonsense sort=title&sort=size order=up limit=0 limit=1001 limit=-1 limit=%2B5
    limit=%D9%A5 limit=ten state=gone state=all&state=new vo= os colour=blue vo={"x" * 257}
    cursor=%%% cursor=bm90IGpzb24 cursor=WzEsMiwzXQ
    sort=size&cursor=WyJ0aXRsZSIsImFzYyIsMCwiYSIsImIiXQ
""".split()


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_a_bad_parameter_answers_400_in_json(served: Served, query: str) -> None:
    reply = served.get(f"/api/v1/images?{query}")
    assert (reply.status, json.loads(reply.body)["error"]) == (400, "bad-parameter")


NOT_FOUND = f"/api/v1/images/{image_uuid(99)} /api/v1/images/ /api/v1/nothing /api/v1/x%0Ay"
NOT_UUIDS = f"not-a-uuid urn:uuid:{image_uuid(1)} %2e%2e %7B%7D"


@pytest.mark.parametrize(
    ("path", "status"),
    [(path, 404) for path in [*NOT_FOUND.split(), "/api/v2/images"]]
    + [(f"/api/v1/images/{segment}", 400) for segment in NOT_UUIDS.split()],
)
def test_unknown_images_and_paths_answer_json(served: Served, path: str, status: int) -> None:
    reply = served.get(path)
    assert reply.status == status
    assert json.loads(reply.body)["error"] == ("not-found" if status == 404 else "bad-parameter")


def test_a_store_that_cannot_be_read_answers_503_in_json(plain: World) -> None:
    moved = plain.home.root / "moved.db"
    with serving(plain) as server:  # the store is opened at the first request
        plain.home.database.rename(moved)
        down = server.get("/api/v1/images")
        moved.rename(plain.home.database)
        up = server.get("/api/v1/images")

    assert (down.status, json.loads(down.body)["error"]) == (503, "unavailable")
    assert up.status == 200


# -- anything from outside -----------------------------------------------------------------
_NAMES = st.sampled_from(PARAMETERS) | st.text(max_size=12)
_SOME = "all available new title size asc desc 1 1000 0 -1 1e3 dteam atlas x86_64 KVM % \x00"
_VALUES = st.sampled_from(["", *_SOME.split(" ")]) | st.text(max_size=300)
_CURSORS = st.tuples(
    st.sampled_from(list(SORTS)),
    st.sampled_from(["asc", "desc"]),
    st.one_of(st.integers(-1, 2), st.booleans(), st.none()),
    st.one_of(st.integers(), st.text(max_size=20), st.none(), st.floats()),
    st.text(max_size=40),
).map(lambda key: base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("="))
_PAIRS = st.lists(
    st.tuples(_NAMES, _VALUES) | st.tuples(st.just("cursor"), _CURSORS), max_size=6
).map(lambda pairs: urlencode(pairs, quote_via=quote))
_RAW = st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%", max_size=200)


@pytest.mark.fuzz
@given(query=_PAIRS | _RAW)
def test_any_query_string_answers_200_or_400_in_json(served: Served, query: str) -> None:
    reply = served.get(f"/api/v1/images?{query}")
    assert reply.status in (200, 400), (query, reply.status, reply.text)


@pytest.mark.fuzz
@given(segment=st.text(max_size=60))
def test_any_image_path_answers_200_400_or_404_in_json(served: Served, segment: str) -> None:
    reply = served.get(f"/api/v1/images/{quote(segment, safe='')}")
    assert reply.status in (200, 400, 404), (segment, reply.status, reply.text)
