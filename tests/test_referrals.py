"""Referrals: a code per customer, and a friend's first order with it credits them once."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from parcours.app import create_app
from parcours.customers import profiles as customers
from parcours.customers.projection import identity_resolver
from parcours.log import Reactions
from parcours.loyalty import codes
from parcours.loyalty.referrals import (
    DEFER_MS,
    GATHER_MS,
    LOCK_BUCKETS,
    LOCK_SPACE,
    Referrals,
)
from parcours.messaging import templates
from parcours.runtime.clock import SimulatedClock
from parcours.runtime.db import Database
from parcours.runtime.queue import Worker
from parcours.runtime.settings import Settings
from parcours.services import Services
from tests import shopify_payloads as shopify
from tests.conftest import make_event, truncate_all
from tests.test_journeys_engine import DAY, advance, opt_in, publish, sent, track
from tests.test_shopify import SECRET, SHOP, deliver
from tests.test_templates import TEMPLATES

RANDOM = f"[{codes.ALPHABET}]"
REWARD = re.compile(f"{RANDOM}{{4}}-{RANDOM}{{4}}-{RANDOM}{{4}}")


def customer_id(services: Services, user: str) -> int:
    with services.db.read() as conn:
        return customers.resolve(conn, user, "FR")


def code_of(services: Services, user: str) -> str:
    with services.db.read() as conn:
        traits = customers.profile(conn, customers.resolve(conn, user, "FR")).traits
    code: str = traits["referral_code"]
    return code


def events_of(services: Services, user: str, name: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        rows = conn.execute(
            text("SELECT payload FROM events WHERE customer_id = :c AND name = :n ORDER BY seq"),
            {"c": customers.resolve(conn, user, "FR"), "n": name},
        ).scalars()
        return [json.loads(row)["properties"] for row in rows]


def count_events(services: Services, name: str) -> int:
    with services.db.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM events WHERE name = :n"), {"n": name}
            ).scalar_one()
        )


def issue_codes(services: Services) -> None:
    """Let the codes of the orders so far be issued (their jobs wait GATHER_MS)."""
    clock = services.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance_ms(GATHER_MS)
    services.worker.run_due()


def settle(services: Services) -> None:
    """Run the jobs left to later (a customer's referral lock held by another worker), until
    none is left."""
    clock = services.clock
    assert isinstance(clock, SimulatedClock)
    for _ in range(20):
        services.worker.run_due()
        with services.db.read() as conn:
            if not conn.execute(text("SELECT count(*) FROM jobs")).scalar_one():
                return
        clock.advance_ms(DEFER_MS)
    raise AssertionError("jobs still left after 20 rounds")


def referrer(services: Services, user: str = "camille", first_name: str = "Camille") -> str:
    """A customer who ordered once, and so holds a referral code."""
    opt_in(services, user, first_name=first_name)
    track(services, user, "Order Completed", order_id=f"{user}-1")
    issue_codes(services)
    return code_of(services, user)


def order(
    user: str,
    order_id: str,
    message_id: str | None = None,
    at: int | None = None,
    **properties: Any,
) -> Any:
    fields: dict[str, Any] = {"messageId": message_id} if message_id else {}
    return make_event(
        "track",
        userId=user,
        event="Order Completed",
        at=at,
        properties={"order_id": order_id, **properties},
        **fields,
    )


# ---- the code --------------------------------------------------------------------------


def test_codes_are_typeable_and_leave_out_confusable_characters() -> None:
    assert not set("0O1IL") & set(codes.ALPHABET)
    assert re.fullmatch(f"ELOISE-{RANDOM}{{6}}", codes.new_referral_code("Éloïse"))
    assert codes.name_part("Jean-Luc") == "JEANLUC"
    assert codes.name_part("Maximilienne-Alexandra") == "MAXIMILIENNE"
    assert re.fullmatch(f"{RANDOM}{{4}}-{RANDOM}{{4}}", codes.new_referral_code("李"))
    assert REWARD.fullmatch(codes.new_reward_code())
    assert codes.codes_in_order({"referral_code": " camille-7k3 qm9 ", "coupon": "TENOFF,"}) == [
        "CAMILLE-7K3QM9",
        "TENOFF",
    ]


def test_a_first_order_issues_one_code_made_from_the_first_name(services: Services) -> None:
    code = referrer(services)
    assert re.fullmatch(f"CAMILLE-{RANDOM}{{6}}", code)
    assert events_of(services, "camille", "Referral Code Issued") == [{"code": code}]
    track(services, "camille", "Order Completed", order_id="camille-2")
    issue_codes(services)
    assert code_of(services, "camille") == code
    assert len(events_of(services, "camille", "Referral Code Issued")) == 1
    track(services, "nameless", "Order Completed", order_id="n-1")
    with services.db.read() as conn:  # the code comes within GATHER_MS, not at once
        traits = customers.profile(conn, customer_id(services, "nameless")).traits
    assert "referral_code" not in traits
    issue_codes(services)
    assert re.fullmatch(f"{RANDOM}{{4}}-{RANDOM}{{4}}", code_of(services, "nameless"))
    with services.db.read() as conn:
        computed = customers.profile(conn, customer_id(services, "camille")).computed
    assert computed["orders_count"] == 2


def _three_commits_of_orders(services: Services) -> None:
    """Three ingest commits, so three jobs; buyer-0 orders in each of them."""
    for n in range(3):
        services.writer.append_sync([order(f"buyer-{n}", f"b-{n}"), order("buyer-0", f"b0-{n}")])


def test_the_buyers_of_a_batch_of_jobs_get_their_codes_in_one_append(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_commits_of_orders(services)
    services.clock.advance_ms(GATHER_MS)  # type: ignore[attr-defined]
    appended: list[int] = []
    original = Referrals._append

    def counted(self: Referrals, conn: Any, events: list[Any], now: int) -> None:
        appended.append(len(events))
        original(self, conn, events, now)

    monkeypatch.setattr(Referrals, "_append", counted)
    assert services.worker.run_due() == 3
    assert appended == [3]  # three buyers, an event each (giving the trait): one append
    for n in range(3):
        assert len(events_of(services, f"buyer-{n}", "Referral Code Issued")) == 1
        assert code_of(services, f"buyer-{n}")


def test_orders_committed_apart_within_a_gathering_span_fall_due_together(
    services: Services,
) -> None:
    """Jobs due GATHER_MS after each commit fell due one at a time, and a worker woken
    for each ran them one by one: they are due at the next whole span instead."""
    clock = services.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance_ms(GATHER_MS - clock.now_ms() % GATHER_MS + 1)  # just after a span starts
    for n in range(3):
        services.writer.append_sync([order(f"buyer-{n}", f"b-{n}")])
        clock.advance_ms(GATHER_MS // 4)
    with services.db.read() as conn:
        due = {row[0] for row in conn.execute(text("SELECT run_at FROM jobs"))}
    assert len(due) == 1
    (when,) = due
    assert when % GATHER_MS == 0 and when > clock.now_ms()
    clock.advance_ms(when - clock.now_ms())
    assert services.worker.run_due() == 3  # the first one's time is the others' too
    for n in range(3):
        assert code_of(services, f"buyer-{n}")


def test_when_preparing_the_batch_fails_each_job_issues_its_own_codes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_commits_of_orders(services)
    services.clock.advance_ms(GATHER_MS)  # type: ignore[attr-defined]
    original = Referrals._issue
    calls: list[set[int]] = []

    def failing_first(self: Referrals, conn: Any, ordered_at: dict[int, int], now: int) -> None:
        calls.append(set(ordered_at))
        if len(calls) == 1:
            raise RuntimeError("the batch's issuance broke")
        original(self, conn, ordered_at, now)

    monkeypatch.setattr(Referrals, "_issue", failing_first)
    assert services.worker.run_due() == 3
    assert len(calls) == 4  # the batch's, rolled back; then each job its own
    for n in range(3):
        assert len(events_of(services, f"buyer-{n}", "Referral Code Issued")) == 1
    assert count_events(services, "Referral Code Issued") == 3
    with services.db.read() as conn:
        failed = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    assert failed == 0


def test_a_code_already_taken_is_never_issued_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = referrer(services)
    offered = iter([taken, "CAMILLE-QQQQQQ"])
    monkeypatch.setattr(codes, "new_referral_code", lambda _name: next(offered))
    opt_in(services, "camille-2", first_name="Camille")
    track(services, "camille-2", "Order Completed", order_id="c2-1")
    issue_codes(services)
    assert code_of(services, "camille-2") == "CAMILLE-QQQQQQ"
    with services.db.write() as conn, pytest.raises(IntegrityError):  # the database refuses
        conn.execute(
            text("INSERT INTO referral_codes (code, customer_id, issued_at) VALUES (:code, 99, 0)"),
            {"code": taken},
        )


def test_importing_old_orders_issues_codes_and_sends_no_invitation(
    services: Services, clock: SimulatedClock
) -> None:
    publish(services, (TEMPLATES / "referral-invitation.yaml").read_text())
    opt_in(services, "old", first_name="Odile")
    month_ago = clock.now_ms() - 30 * DAY
    services.writer.append_sync([order("old", "old-1", at=month_ago)])
    advance(services, clock, 4 * DAY, step=DAY)
    assert code_of(services, "old").startswith("ODILE-")
    assert sent(services, "old") == []


# ---- crediting the referrer --------------------------------------------------------------


def test_a_friends_first_order_with_the_code_credits_the_referrer_once(
    services: Services,
) -> None:
    code = referrer(services)
    first = order("lea", "lea-1", message_id="site-lea-1", coupon=code.lower())
    services.writer.append_sync([first])
    services.writer.append_sync([first])  # a retried delivery
    services.worker.run_due()
    # The same order reported again by another source, then her second order with the code.
    track(services, "lea", "Order Completed", order_id="lea-1", referral_code=code)
    track(services, "lea", "Order Completed", order_id="lea-2", coupon=code)
    lea = customers.public_id(customer_id(services, "lea"))
    [converted] = events_of(services, "camille", "Referral Converted")
    assert REWARD.fullmatch(converted.pop("reward_code"))
    assert converted == {
        "code": code,
        "referee_id": lea,
        "order_id": "lea-1",
        "referrals_count": 1,
    }
    assert events_of(services, "camille", "Referral Not Credited") == [
        {"code": code, "referee_id": lea, "order_id": "lea-2", "reason": "not_first_order"}
    ]
    assert events_of(services, "lea", "Referral Converted") == []
    assert len(events_of(services, "lea", "Referral Code Issued")) == 1  # her own code


def test_a_friend_who_had_ordered_before_credits_nobody(services: Services) -> None:
    code = referrer(services)
    track(services, "lea", "Order Completed", order_id="lea-0")
    track(services, "lea", "Order Completed", order_id="lea-1", coupon=code)
    assert events_of(services, "camille", "Referral Converted") == []
    [refused] = events_of(services, "camille", "Referral Not Credited")
    assert refused["reason"] == "not_first_order"


def test_the_code_is_read_from_referral_code_and_among_several_coupons(
    services: Services,
) -> None:
    code = referrer(services)
    track(services, "lea", "Order Completed", order_id="lea-1", referral_code=f" {code.lower()} ")
    track(services, "hugo", "Order Completed", order_id="hugo-1", coupon=f"SUMMER10,{code}")
    converted = events_of(services, "camille", "Referral Converted")
    assert [(c["order_id"], c["referrals_count"]) for c in converted] == [
        ("lea-1", 1),
        ("hugo-1", 2),
    ]
    assert converted[0]["reward_code"] != converted[1]["reward_code"]


def test_an_unknown_code_credits_nobody(services: Services) -> None:
    referrer(services)
    track(services, "lea", "Order Completed", order_id="lea-1", coupon="SUMMER10")
    track(services, "hugo", "Order Completed", order_id="hugo-1", referral_code="CAMILLE-ZZZZZZ")
    assert count_events(services, "Referral Converted") == 0
    assert count_events(services, "Referral Not Credited") == 0


def test_a_customer_never_credits_themselves(services: Services) -> None:
    code = referrer(services)
    track(services, "camille", "Order Completed", order_id="camille-2", coupon=code)
    # A phone browsing anonymously, whose order proves it is Camille's: the profiles merge.
    services.writer.append_sync([make_event("page", anonymousId="phone-9", name="Home")])
    services.writer.append_sync(
        [
            make_event(
                "track",
                anonymousId="phone-9",
                event="Order Completed",
                properties={"order_id": "camille-3", "coupon": code},
                context={"traits": {"email": "camille@example.com"}},
            )
        ]
    )
    services.worker.run_due()
    assert customer_id(services, "phone-9") == customer_id(services, "camille")
    assert count_events(services, "Referral Converted") == 0
    refused = events_of(services, "camille", "Referral Not Credited")
    assert [(r["order_id"], r["reason"]) for r in refused] == [
        ("camille-2", "self_referral"),
        ("camille-3", "self_referral"),
    ]


def test_a_merged_referrer_is_credited_on_the_surviving_profile(services: Services) -> None:
    # Camille browsed on her phone before she had an account: that profile is the older one.
    services.writer.append_sync([make_event("page", anonymousId="cam-phone", name="Home")])
    code = referrer(services)
    services.writer.append_sync([make_event("identify", userId="camille", anonymousId="cam-phone")])
    survivor = customer_id(services, "cam-phone")
    assert customer_id(services, "camille") == survivor
    track(services, "lea", "Order Completed", order_id="lea-1", coupon=code)
    [converted] = events_of(services, "camille", "Referral Converted")
    assert converted["order_id"] == "lea-1"
    with services.db.read() as conn:
        owner = conn.execute(
            text("SELECT customer_id FROM referral_codes WHERE code = :c"), {"c": code}
        ).scalar_one()
    assert owner == survivor
    track(services, "camille", "Order Completed", order_id="camille-2")
    assert len(events_of(services, "camille", "Referral Code Issued")) == 1  # still one code


def test_the_code_of_an_erased_customer_credits_nobody(services: Services) -> None:
    code = referrer(services)
    customers.erase(services.db, services.people, "camille", "FR", services.clock.now_ms(), "test")
    track(services, "lea", "Order Completed", order_id="lea-1", coupon=code)
    assert count_events(services, "Referral Converted") == 0
    assert count_events(services, "Referral Not Credited") == 0


@pytest.fixture
def shop(settings: Settings, clock: SimulatedClock) -> Iterator[tuple[Services, TestClient[Any]]]:
    configured = settings.with_overrides(shopify_webhook_secret=SECRET, shopify_shops=(SHOP,))
    services = Services.open(configured, clock=clock)
    with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
        yield services, client
    services.close()


def test_a_shopify_order_with_the_code_among_its_discount_codes_credits_the_referrer(
    shop: tuple[Services, TestClient[Any]],
) -> None:
    services, client = shop
    code = referrer(services)
    discount_codes = [{"code": "TENOFF", "amount": "5.00"}, {"code": code, "amount": "0.00"}]
    response = deliver(client, "orders/create", shopify.order(discount_codes=discount_codes))
    assert response.status_code == 200, response.text
    assert (
        deliver(
            client, "orders/create", shopify.order(discount_codes=discount_codes), webhook_id="wh-2"
        ).status_code
        == 200
    )  # Shopify delivering the same order again, as a new webhook
    services.worker.run_due()
    [converted] = events_of(services, "camille", "Referral Converted")
    assert converted["order_id"] == f"{SHOP}:{shopify.order()['id']}"
    assert converted["referee_id"] == customers.public_id(customer_id(services, "bob@example.com"))


def test_workers_racing_over_the_same_friends_orders_credit_each_friend_once(
    services: Services, settings: Settings, clock: SimulatedClock
) -> None:
    """Every friend's first order arrives twice (the site and the shop) and a second order
    follows, each in its own job; two workers, each with its own connections, share them."""
    code = referrer(services)
    friends = [f"friend-{n}" for n in range(8)]
    for friend in friends:
        for event in (
            order(friend, f"{friend}-1", coupon=code),
            order(friend, f"{friend}-1", referral_code=code),
            order(friend, f"{friend}-2", coupon=code),
        ):
            services.writer.append_sync([event])
    databases = [Database(settings.resolved_database_url) for _ in range(2)]
    workers = []
    for db in databases:
        worker = Worker(db, clock, queues=("default",), batch=1)
        reactions = Reactions(identity_resolver("FR"), merges=services.people.follow_merges)
        Referrals(clock, "FR", reactions).install(worker, reactions)
        workers.append(worker)
    errors: list[BaseException] = []

    def drain(worker: Worker) -> None:
        try:
            while worker.run_due():
                pass
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    settle(services)  # anything left to later by a lost race
    for db in databases:
        db.dispose()
    assert errors == []
    converted = events_of(services, "camille", "Referral Converted")
    assert sorted(c["order_id"] for c in converted) == sorted(f"{f}-1" for f in friends)
    assert sorted(c["referrals_count"] for c in converted) == list(range(1, 9))
    refused = events_of(services, "camille", "Referral Not Credited")
    assert sorted(r["order_id"] for r in refused) == sorted(f"{f}-2" for f in friends)
    with services.db.read() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    assert jobs == 0


@pytest.fixture
def on_postgresql(postgres_url: str, tmp_path: Path, clock: SimulatedClock) -> Iterator[Services]:
    """Services on PostgreSQL only: what these tests check are locks between transactions,
    which SQLite, with its one writer at a time, never takes."""
    truncate_all(postgres_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, default_region="FR")
    opened = Services.open(settings, clock=clock)
    yield opened
    opened.close()


def test_a_buyer_whose_lock_another_worker_holds_is_served_later_without_waiting(
    on_postgresql: Services, clock: SimulatedClock
) -> None:
    """Another worker holds the referral locks of a buyer and of a referrer (PostgreSQL):
    the batch waits for neither (a batch that waited, holding locks of its own, deadlocked
    with another), leaves their orders to a job a little later, and that job issues the
    code and credits the referrer once."""
    services = on_postgresql
    code = referrer(services)
    opt_in(services, "dana", first_name="Dana")
    dana = customer_id(services, "dana")
    camille = customer_id(services, "camille")
    holder = Database(services.settings.resolved_database_url)
    try:
        with holder.engine.connect() as other:
            other.execute(
                text("SELECT pg_advisory_xact_lock(:s, :k)"),
                {"s": LOCK_SPACE, "k": dana % LOCK_BUCKETS},
            )
            other.execute(
                text("SELECT pg_advisory_xact_lock(:s, :k)"),
                {"s": LOCK_SPACE, "k": camille % LOCK_BUCKETS},
            )
            services.writer.append_sync(
                [order("dana", "dana-1"), order("lea", "lea-1", coupon=code)]
            )
            issue_codes(services)  # returns: nothing waited for the held locks
            assert events_of(services, "dana", "Referral Code Issued") == []
            assert events_of(services, "camille", "Referral Converted") == []
            assert len(events_of(services, "lea", "Referral Code Issued")) == 1
            with services.db.read() as conn:
                due = conn.execute(text("SELECT run_at FROM jobs")).scalars().all()
            assert due and min(due) > clock.now_ms()  # later, not at once
            other.rollback()  # the other worker is done
        settle(services)
    finally:
        holder.dispose()
    assert code_of(services, "dana").startswith("DANA-")
    assert len(events_of(services, "dana", "Referral Code Issued")) == 1
    [converted] = events_of(services, "camille", "Referral Converted")
    assert converted["order_id"] == "lea-1"


def test_the_codes_of_a_flash_sale_take_a_bounded_number_of_locks(
    on_postgresql: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch issuing the codes of 1,500 buyers holds at most LOCK_BUCKETS referral locks
    (it held one a buyer: a flash sale's 10,000, more than PostgreSQL's lock table holds by
    default for every session together, made other workers' batches fail with "out of
    shared memory"); every buyer still gets a code."""
    services = on_postgresql
    held: list[int] = []
    original = Referrals._append

    def counted(self: Referrals, conn: Any, events: Any, now: int) -> None:
        held.append(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :space AND pid = pg_backend_pid()"
                ),
                {"space": LOCK_SPACE},
            ).scalar_one()
        )
        original(self, conn, events, now)

    services.writer.append_sync([order(f"buyer-{n}", f"o-{n}") for n in range(1_500)])
    monkeypatch.setattr(Referrals, "_append", counted)
    issue_codes(services)
    assert held and max(held) <= LOCK_BUCKETS < 1_500  # not one a buyer
    assert count_events(services, "Referral Code Issued") == 1_500


# ---- the messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("en", ("referral code is", "Your reward code")),
        ("fr", ("code de parrainage", "récompense")),
    ],
)
def test_referral_messages_show_the_codes_in_english_and_french(
    locale: str, words: tuple[str, str]
) -> None:
    context: dict[str, Any] = {
        "customer": {"first_name": "Camille", "referral_code": "CAMILLE-7K3QM9"},
        "event": {
            "event": "Referral Converted",
            "properties": {"code": "CAMILLE-7K3QM9", "reward_code": "K7QM-3XDP-9RTA"},
        },
        "cart": None,
        "order": None,
        "brand": {"name": "Maison", "url": "https://maison.example"},
        "links": {
            "shop": "https://maison.example",
            "unsubscribe": "https://p.example/u/x",
            "preferences": "https://p.example/p/x",
        },
        "message": {},
    }
    shipped = templates.shipped()

    def email(template_id: str) -> str:
        rendered = templates.render(shipped[template_id], "email", context, locale)
        assert rendered.locale == locale
        return str(rendered.fields["subject"]) + "\n" + str(rendered.fields["text"])

    invitation = email("referral-invitation")
    assert words[0] in invitation and "CAMILLE-7K3QM9" in invitation
    reward = email("referral-reward")
    assert words[1] in reward and "K7QM-3XDP-9RTA" in reward and "CAMILLE-7K3QM9" in reward
    assert "CAMILLE-7K3QM9" in email("referral-refer-again")
    push = templates.render(shipped["referral-refer-again"], "push", context, locale)
    assert "CAMILLE-7K3QM9" in push.fields["body"]
    assert ("Unsubscribe" if locale == "en" else "désabonner") in invitation  # marketing
