"""`parcours demo`: the accelerated clock that drives the whole process, the traffic drawn
from a seed (the same seed, the same traffic; a restart goes on as if it never stopped),
every event passing its door, and the demo itself started as a real process: messages in
the outbox and tracking pages within seconds, a clean stop on Ctrl-C, and a restart that
goes on where it was without seeding twice."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import Connection, func, select

from parcours import accounts, brand, commerce
from parcours.app import create_app
from parcours.brand.tables import brand_settings
from parcours.demo import Demo, DemoOptions
from parcours.demo.people import people
from parcours.demo.sectors import SECTORS, ProductSpec, load_sectors, sector_named
from parcours.demo.seeding import seed
from parcours.demo.simulator import Doors, Simulator, Traffic, as_event
from parcours.demo.world import (
    CARRIER,
    DAY,
    HOUR,
    NOTIFY_ME,
    PUSH_SUBSCRIBE,
    REVIEW_FORM,
    Planned,
    World,
)
from parcours.journeys.tables import journey_versions
from parcours.log import events
from parcours.messaging import SECTOR_PRESETS
from parcours.runtime.clock import (
    AcceleratedClock,
    SimulatedClock,
    clock_ms,
    iso,
    real_seconds,
)
from parcours.runtime.db import Database, migrate
from parcours.runtime.i18n import text
from parcours.runtime.queue import Job, Worker, enqueue
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests.conftest import START, free_port, wait_until, wait_until_serving

# ---- the accelerated clock ---------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_accelerated_clock_runs_its_factor_times_faster_from_its_start() -> None:
    real = FakeMonotonic()
    clock = AcceleratedClock(START, 360, monotonic=real)
    assert clock.now_ms() == START
    real.now += 10  # ten real seconds: a simulated hour
    assert clock.now_ms() == START + 3_600_000
    real.now += 0.001
    assert clock.now_ms() == START + 3_600_360
    assert real_seconds(clock, 3_600_000) == 10
    assert clock_ms(clock, 10) == 3_600_000


def test_an_accelerated_clock_refuses_a_factor_that_is_not_above_zero() -> None:
    with pytest.raises(ValueError, match="above 0"):
        AcceleratedClock(START, 0)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database)
    yield database
    database.dispose()


def test_a_worker_on_an_accelerated_clock_runs_a_job_when_it_falls_due_in_real_time(
    db: Database,
) -> None:
    """A job due in half a simulated hour, at an hour a second, runs about half a real
    second later: the worker's sleep is counted in real seconds, not in the clock's
    milliseconds (it would otherwise sleep its whole 30-second poll)."""
    clock = AcceleratedClock(START, 3600)
    worker = Worker(db, clock, poll_seconds=30)
    ran = threading.Event()

    def note(conn: Connection, job: Job) -> None:
        ran.set()

    worker.register("later", note)
    db.after_jobs_scheduled(worker.wake_for)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        began = time.monotonic()
        with db.write() as conn:
            now = clock.now_ms()
            enqueue(conn, "later", {}, run_at=now + 1_800_000, now=now)
        assert ran.wait(10), "the job did not run"
        assert 0.3 < time.monotonic() - began < 5
    finally:
        worker.stop()
        thread.join(10)


def test_people_keep_real_time_in_the_console_while_the_shop_runs_faster(
    settings: Settings,
) -> None:
    """A console session opened in the demo still counts in real time: ten hours a second
    on the shop's clock would end it after 1.2 real seconds without a request (its idle
    limit is twelve hours), and no authenticator app's code would match."""
    from litestar.testing import TestClient

    from parcours import accounts
    from parcours.app import create_app
    from parcours.runtime.clock import SystemClock, wall_clock

    clock = AcceleratedClock(START, 36_000)  # ten hours a real second
    assert isinstance(wall_clock(clock), SystemClock)
    simulated = SimulatedClock(START)
    assert wall_clock(simulated) is simulated  # tests move people's time with the rest
    services = Services.open(settings, clock=clock)
    try:
        now = SystemClock().now_ms()
        token = accounts.setup_link_token(services.db, now)
        assert token is not None
        accounts.accept_invitation(
            services.db,
            token,
            email="owner@example.com",
            name="Owner",
            password="a long passphrase 42",
            now=now,
        )
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            signed = client.post(
                "/console/login",
                data={"email": "owner@example.com", "password": "a long passphrase 42"},
                follow_redirects=False,
            )
            assert signed.status_code in (302, 303)
            time.sleep(2)  # 20 simulated hours: past the idle limit, on the shop's clock
            page = client.get("/console/", follow_redirects=False)
            assert page.status_code == 200, page.headers.get("location")
    finally:
        services.close()


def test_the_demo_worker_heartbeat_is_counted_in_real_seconds(settings: Settings) -> None:
    """The shop's clock runs an hour a real second, but a heartbeat says that the worker
    lives now: /readyz tells its age in real seconds (not thousands of simulated ones),
    and /metrics counts the worker fresh, under the default `worker_stale_seconds`."""
    demo, demo_settings = Demo.prepare(settings, DemoOptions(customers=10, speed=3600))
    assert demo_settings.worker_stale_seconds == settings.worker_stale_seconds
    services = Services.open(demo_settings, clock=demo.clock)
    try:
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            services.start_worker()
            wait_until(lambda: services.heartbeat.last_beat_at is not None, 10, what="a beat")
            time.sleep(2)  # two simulated hours
            answer = client.get("/readyz")
            assert answer.status_code == 200, answer.text
            ready = answer.json()
            assert re.fullmatch(r"beating, last [0-4] s ago", ready["worker"]), ready["worker"]
            assert ready["workers"] == {"fresh": 1, "stale": 0, "required": 0}
        assert 'parcours_workers{state="fresh"} 1.0' in services.metrics().render().decode()
    finally:
        services.close()


# ---- the traffic, drawn from the seed -----------------------------------------------------


def world(seed: int = 1, customers: int = 300, sector: str = "fashion") -> World:
    return World.build(
        seed, sector_named(sector), people(seed, customers), START, "http://127.0.0.1:8000"
    )


def drawn(simulator: Simulator, until: int, every: int = HOUR) -> list[Planned]:
    found: list[Planned] = []
    moment = START
    while moment < until:
        moment = min(moment + every, until)
        found += simulator.due(moment)
    return found


def test_the_same_seed_draws_the_same_traffic_and_another_seed_another() -> None:
    first = drawn(Simulator(world(seed=7)), START + 2 * DAY)
    again = drawn(Simulator(world(seed=7)), START + 2 * DAY, every=7 * 60_000)
    other = drawn(Simulator(world(seed=8)), START + 2 * DAY)
    assert len(first) > 300
    assert first == again  # looked at every hour or every seven minutes: the same
    assert [p.document for p in first] != [p.document for p in other]
    times = [p.at for p in first]
    assert times == sorted(times)
    ids = [p.document.get("messageId") or p.document["event_id"] for p in first]
    assert len(ids) == len(set(ids))


def test_a_simulator_resumed_from_its_saved_position_goes_on_as_if_it_never_stopped() -> None:
    uninterrupted = drawn(Simulator(world()), START + 3 * DAY)
    before = Simulator(world())
    first = drawn(before, START + DAY + 5 * HOUR)
    saved = json.loads(json.dumps({"next": before.next_slot, "pending": before.pending()}))
    after = Simulator(world(), saved["next"], [tuple(step) for step in saved["pending"]])
    rest = [p for p in drawn(after, START + 3 * DAY) if p.at > START + DAY + 5 * HOUR]
    assert first + rest == uninterrupted


def test_every_event_the_traffic_makes_passes_its_door_and_tells_the_whole_story() -> None:
    planned = drawn(Simulator(world(customers=1000)), START + 12 * DAY)
    names: dict[str, int] = {}
    for item in planned:
        if item.door in (NOTIFY_ME, REVIEW_FORM, PUSH_SUBSCRIBE):  # with a database: below
            key = item.door
        elif item.door == CARRIER:
            assert as_event(item, item.at).name == "Shipment Updated"
            key = f"carrier {item.document['status']}"
        else:
            key = str(as_event(item, item.at).name)
        names[key] = names.get(key, 0) + 1
    for name in (
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Shipment Label Created",
        "carrier in_transit",
        "carrier out_for_delivery",
        "carrier delivery_attempted",
        "carrier ready_for_pickup",
        "Shipment Delayed",
        "Shipment Delivered",
        "Return Requested",
        "Order Refunded",
        REVIEW_FORM,
        NOTIFY_ME,
        PUSH_SUBSCRIBE,
        "Signed Up",
        "Consent Updated",
        "Product Updated",
        "Private Sale Announced",
    ):
        assert names.get(name, 0) > 0, f"no {name} in twelve days: {names}"


def test_the_traffic_through_its_doors_sets_the_journeys_to_work(
    services: Services, clock: SimulatedClock
) -> None:
    """Seeded, then six simulated days of a small food shop's traffic, three hours at a
    time, with the worker running what falls due: carts abandoned and reminded, parcels
    announced stage by stage, "notify me" requests answered when the stock comes back,
    reviews through the form, and messages held with their reasons."""
    shop = World.build(
        3, sector_named("food"), people(3, 150), clock.now_ms(), "http://127.0.0.1:8000"
    )
    assert seed(services, shop) == 150 + 8
    assert seed(services, shop) == 0  # a second time stores nothing
    doors = Doors(services.db, services.writer, services.reactions)
    traffic = Traffic(Simulator(shop), clock, doors, lambda simulator, stopped: None)
    for _ in range(6 * 8):
        clock.advance_ms(3 * HOUR)
        traffic.step()
        services.worker.run_due()
    with services.db.read() as conn:
        names = dict(
            conn.execute(select(events.c.name, func.count()).group_by(events.c.name)).all()
        )
        held = conn.execute(
            select(func.count()).select_from(events).where(events.c.name == "Message Held")
        ).scalar()
        pushed = conn.execute(
            select(func.count())
            .select_from(events)
            .where(events.c.name == "Message Sent", events.c.payload.like('%"channel":"push"%'))
        ).scalar()
    for name in (
        "Cart Abandoned",
        "Shipment Stage Reached",
        "Back In Stock Requested",
        "Back In Stock",
        "Review Due",
        "Review Submitted",
        "Message Sent",
        "Push Subscribed",
    ):
        assert names.get(name, 0) > 0, f"no {name}: {names}"
    assert held and pushed
    # The console shows it: its pages read the demo's data, in English and in French.
    now = clock.now_ms()
    token = accounts.setup_link_token(services.db, now)
    assert token is not None
    accounts.accept_invitation(
        services.db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        signed_in = client.post(
            "/console/login",
            data={"email": "owner@brand.example", "password": PASSWORD},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303
        for language in ("en", "fr"):
            for path in (
                "/console/",
                "/console/journeys",
                "/console/journeys/abandoned-cart",
                "/console/outbox",
                "/console/shipments",
                "/console/returns",
                "/console/catalog",
                "/console/customers/1",
            ):
                page = client.get(path, headers={"Accept-Language": language})
                assert page.status_code == 200, (path, page.text[:300])
            assert "Potager &amp; Cie" in page.text or "Potager & Cie" in page.text
        catalog = client.get("/console/catalog", headers={"Accept-Language": "fr"}).text
        assert "Miel de lavande" in catalog


def test_a_french_customer_reads_the_catalog_in_french_and_a_british_one_in_english() -> None:
    shoppers = world(customers=400)
    planned = drawn(Simulator(shoppers), START + DAY)
    by_user = {person.user_id: person for person in shoppers.customers}
    seen = {"fr": set(), "en": set()}
    for item in planned:
        document = item.document
        if document.get("event") == "Product Viewed" and document["userId"] in by_user:
            language = by_user[document["userId"]].language
            seen[language].add(document["properties"]["name"])
    fashion = SECTORS["fashion"]
    french = {fashion.name(spec, "fr") for spec in fashion.products}
    english = {fashion.name(spec, "en") for spec in fashion.products}
    assert seen["fr"] and seen["fr"] <= french
    assert seen["en"] and seen["en"] <= english


def test_the_customers_are_plausible_and_each_has_an_address_of_their_own() -> None:
    crowd = people(3, 2000)
    assert crowd[0].email == "camille@example.com" and crowd[0].first_name == "Camille"
    assert len({p.email for p in crowd}) == 2000
    phones = [p.phone for p in crowd if p.phone]
    assert len(phones) == len(set(phones)) > 1200
    french = sum(p.locale == "fr-FR" for p in crowd)
    assert 1000 < french < 1400
    assert crowd == people(3, 2000)


def test_every_sector_has_legible_colours_and_its_words_in_both_languages() -> None:
    assert sorted(SECTORS) == sorted(
        ["fashion", "beauty", "electronics", "home", "food", "luxury", "baby", "subscription"]
    )
    assert sector_named("children") is SECTORS["baby"]
    for sector in SECTORS.values():
        brand.check(brand.Changes(primary=sector.primary, accent=sector.accent))
        for language in ("en", "fr"):
            for spec in sector.products:
                assert sector.name(spec, language) and sector.category(spec, language)
    english = json.loads(Path("src/parcours/locales/en/demo.json").read_text(encoding="utf-8"))
    french = json.loads(Path("src/parcours/locales/fr/demo.json").read_text(encoding="utf-8"))
    assert english.keys() == french.keys()
    assert text("fr", "demo.product.fashion.scarf") == "Foulard en soie"


def test_every_sector_in_the_data_is_complete_and_an_incomplete_one_is_refused() -> None:
    """sectors.toml: each sector stands for a preset Parcours knows and has a host name of
    its own and eight products with slugs of their own, each priced in exact euros, each
    consumable lasting some days, each run of sizes not empty. A sector or a product that
    lacks a value, or names a run of sizes that is not there, is refused, named."""
    assert {sector.preset for sector in SECTORS.values()} <= SECTOR_PRESETS.keys()
    assert len({sector.slug for sector in SECTORS.values()}) == len(SECTORS)
    for sector in SECTORS.values():
        slugs = [spec.slug for spec in sector.products]
        assert len(slugs) == len(set(slugs)) == 8, sector.key
        for spec in sector.products:
            assert re.fullmatch(r"[1-9][0-9]*\.[0-9]{2}", spec.price), (sector.key, spec.slug)
            assert spec.usage_days is None or spec.usage_days > 0, (sector.key, spec.slug)
            assert all(spec.sizes), (sector.key, spec.slug)
    assert SECTORS["beauty"].products[0].consumable
    assert SECTORS["fashion"].products[0].sizes == ("XS", "S", "M", "L", "XL")
    shop = '[sectors.shop]\nbrand = "Shop"\nslug = "shop"\nprimary = "#000000"\n'
    assert refusal(shop) == "sector shop: missing accent, preset, products"
    shop += 'accent = "#000000"\npreset = "home"\nproducts = [\n'
    mug = '{ slug = "mug", category = "kitchen"'
    assert refusal(f"{shop}{mug} }}]") == "sector shop, product mug: missing price"
    mug += ', price = "9.00"'
    assert refusal(f'{shop}{mug}, colour = "red" }}]') == (
        "sector shop, product mug: unknown colour"
    )
    assert refusal(f'{shop}{mug}, sizes = "xl" }}]') == (
        "sector shop, product mug: no run of sizes named 'xl'"
    )
    made = load_sectors(f"{shop}{mug} }}]")["shop"]
    assert made.products == (ProductSpec("mug", "kitchen", "9.00"),)
    assert not made.products[0].consumable


def refusal(source: str) -> str:
    with pytest.raises(ValueError) as refused:
        load_sectors(source)
    return str(refused.value)


# ---- the demo, a real process -------------------------------------------------------------

ADMIN_KEY = "demo-test-admin-key-1"
PASSWORD = "a long enough passphrase"
CUSTOMERS = 60
_LINK = re.compile(r"http://127\.0\.0\.1:\d+/o/[A-Za-z0-9._~-]+")


def start_demo(data: Path, port: int, log_level: str = "warning") -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env |= {"PARCOURS_ADMIN_KEY": ADMIN_KEY, "PARCOURS_LOG_LEVEL": log_level}
    parcours = str(Path(sys.executable).parent / "parcours")
    options = ["--customers", str(CUSTOMERS), "--speed", "3600", "--sector", "beauty"]
    process = subprocess.Popen(
        [parcours, "demo", "--port", str(port), "--data-dir", str(data), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_until_serving(process, f"http://127.0.0.1:{port}")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    status = process.wait(60)
    errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    assert status == 0, errors[-3000:]
    assert "Traceback" not in errors, errors[-3000:]


def outbox(port: int) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"http://127.0.0.1:{port}/api/outbox?limit=500",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    messages: list[dict[str, Any]] = answer.json()["messages"]
    return messages


def tracking_link(port: int) -> str | None:
    for message in outbox(port):
        found = _LINK.search(json.dumps(message["content"] or {}))
        if found:
            return found.group(0)
    return None


def count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


@pytest.mark.processes
def test_the_demo_lives_stops_on_ctrl_c_and_goes_on_where_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    demo = start_demo(data, port)
    try:
        # Orders confirmed, parcels on their way: their messages link to tracking pages.
        link = wait_until(lambda: tracking_link(port), 40, every=0.5, what="a tracking link")
        page = httpx.get(link, timeout=10)
        assert page.status_code == 200
        assert "Éclat de Sève" in page.text
        picture = re.search(r'src="(http://127\.0\.0\.1:\d+/demo/images/[a-z_-]+\.svg)"', page.text)
        assert picture is not None, "the order's items have no picture"
        image = httpx.get(picture.group(1), timeout=10)
        assert image.status_code == 200
        assert image.headers["content-type"].startswith("image/svg+xml")
        first_run = outbox(port)
        journeys = {m["journey"] for m in first_run}
        assert {"order-confirmation", "post-purchase-updates"} <= journeys
        # Simulated hours went by; the worker's heartbeat is seconds old, in real time.
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
        assert re.fullmatch(r"beating, last [0-9] s ago", ready["worker"]), ready
    finally:
        stop(demo)
    saved = json.loads((data / "demo.json").read_text(encoding="utf-8"))
    assert saved["seeded"] is True and saved["sector"] == "beauty"
    stopped_at = saved["clock_ms"]
    assert stopped_at > saved["start_ms"] + 3 * 3_600_000
    last_created = max(m["created_at"] for m in first_run)

    port = free_port()  # started again on another port: the pictures follow
    demo = start_demo(data, port)
    try:
        # The simulated time goes on from where it stopped, and with it the messages.
        wait_until(
            lambda: any(m["created_at"] > last_created for m in outbox(port)),
            40,
            every=0.5,
            what="a message made after the restart",
        )
    finally:
        stop(demo)
    again = json.loads((data / "demo.json").read_text(encoding="utf-8"))
    assert again["start_ms"] == saved["start_ms"]
    assert again["clock_ms"] > stopped_at
    db = Database(f"sqlite:///{data / 'parcours.db'}")
    try:
        assert count(db, events, events.c.message_id.like("demo-1-person-%")) == CUSTOMERS
        assert count(db, events, events.c.message_id.like("demo-1-product-%")) == 8
        assert count(db, journey_versions) == count(
            db, journey_versions, journey_versions.c.version == 1
        )
        assert count(db, journey_versions, journey_versions.c.status == "live") >= 15
        with db.read() as conn:
            assert conn.execute(select(brand_settings.c.version)).scalar() == 1
            pictures = {p.image_url for p in commerce.products(conn)}
        assert len(pictures) == 8
        assert all(str(p).startswith(f"http://127.0.0.1:{port}/demo/images/") for p in pictures)
    finally:
        db.dispose()


@pytest.mark.processes
def test_ctrl_c_twice_stops_the_demo_without_a_traceback_and_saves_it(tmp_path: Path) -> None:
    """Ctrl-C while a request is in flight waits for it; Ctrl-C again stops waiting (a
    person in a hurry, or a wrapper passing the terminal's signal on). uvicorn would then
    skip the application's shutdown and cancel it, and the request, each with a
    CancelledError traceback: the request sees its client gone instead, the shutdown runs,
    the demo exits with 0, says that it stopped and saved, and demo.json holds where it was."""
    data = tmp_path / "data"
    port = free_port()
    demo = start_demo(data, port, log_level="info")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as in_flight:
        in_flight.sendall(  # a form whose body never comes
            b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
            b"email="
        )
        time.sleep(0.5)
        demo.send_signal(signal.SIGINT)
        time.sleep(1)  # the server waits for the request (up to shutdown_timeout_seconds)
        demo.send_signal(signal.SIGINT)
        status = demo.wait(60)
    errors = demo.stderr.read().decode(errors="replace") if demo.stderr else ""
    assert status == 0, errors[-3000:]
    assert "Traceback" not in errors and "CancelledError" not in errors, errors[-3000:]
    assert "Waiting for connections to close" in errors
    assert "Application shutdown complete." in errors
    saved = json.loads((data / "demo.json").read_text(encoding="utf-8"))
    assert saved["seeded"] is True and saved["clock_ms"] > saved["start_ms"]
    assert f"The demo stopped at simulated time {iso(saved['clock_ms'])}, saved in " in errors
