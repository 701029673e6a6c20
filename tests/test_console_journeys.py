"""The console's journey pages over HTTP (no browser): the journey drawn as a graph with
each step's counts from real runs, the simulator answering on the page, two versions
side by side with exactly the changed lines marked, and the lifecycle's refusals in the
viewer's language (docs/console.md, "A journey's page")."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import pytest
from litestar.testing import TestClient

from parcours import accounts
from parcours.customers import profiles
from parcours.journeys import graph, ready_made_source, versions
from parcours.journeys.program import compile_journey
from parcours.runtime.clock import SimulatedClock
from parcours.services import Services
from tests.conftest import define_templates, make_event
from tests.test_journeys_engine import DAY, HOUR, advance, opt_in

PASSWORD = "a long enough passphrase"

GRAPHED = """\
id: graphed
name: Graphed journey
entry: {event: Signed Up}
goals:
  - {event: Order Completed, window: 7d}
steps:
  - id: hello
    send: {channel: email, template: g-hello}
  - id: pick
    split:
      seed: console-test
      holdout: 30
      paths:
        - {name: a, weight: 1, steps: [{id: tag, update_profile: {add_tags: [graphed]}}]}
  - id: chat
    wait_for: {event: Product Viewed, timeout: 1d, on_timeout: exit}
  - id: vip
    branch:
      - when: {profile.traits.vip: {eq: true}}
        steps:
          - id: vip-sms
            send: {channel: sms, template: g-vip}
      - otherwise:
          - id: bye
            exit: {reason: not vip}
  - id: later
    wait: 2d
"""


def _node(steps: list[graph.GraphStep], step_id: str) -> graph.GraphStep:
    pending = list(steps)
    while pending:
        step = pending.pop(0)
        if step.step_id == step_id:
            return step
        pending += [s for arm in step.arms for s in arm.steps]
    raise AssertionError(f"no step {step_id}")


def _run_the_graphed_journey(services: Services, clock: SimulatedClock) -> dict[str, Any]:
    """Eight sign-ups, one without consent (held); a held-out share; of those treated, a
    VIP who views (an SMS, then a wait), one who views (an exit), one who orders (a
    conversion), the others time out (an exit)."""
    define_templates(services, GRAPHED)
    versions.publish(services.db, GRAPHED, "mia@brand.example", "rob@brand.example", 0)
    users = [f"g{n}" for n in range(8)]
    for user in users[1:]:
        opt_in(services, user)
    services.writer.append_sync(
        [make_event("identify", userId="g0", traits={"email": "g0@example.com"})]
    )
    services.writer.append_sync(
        [make_event(userId=u, event="Signed Up", at=clock.now_ms()) for u in users]
    )
    services.worker.run_due()
    with services.db.read() as conn:
        ids = {u: profiles.resolve(conn, u, "FR") for u in users}
        control = {u for u in users if any(r.control for r in versions.runs_of(conn, ids[u]))}
    treated = [u for u in users if u not in control]
    assert control and len(treated) >= 4, (control, treated)  # the seed gives both groups
    vip, viewer, buyer = treated[:3]
    opt_in(services, vip, vip=True)
    clock.advance_ms(HOUR)
    services.writer.append_sync(
        [
            make_event(userId=vip, event="Product Viewed", at=clock.now_ms()),
            make_event(userId=viewer, event="Product Viewed", at=clock.now_ms()),
            make_event(userId=buyer, event="Order Completed", at=clock.now_ms()),
        ]
    )
    services.worker.run_due()
    advance(services, clock, DAY + HOUR, step=HOUR)
    return {"users": users, "control": control, "treated": treated}


def test_the_graph_counts_each_step_from_real_runs(
    services: Services, clock: SimulatedClock
) -> None:
    ran = _run_the_graphed_journey(services, clock)
    treated, control = ran["treated"], ran["control"]
    with services.db.read() as conn:
        drawn = graph.journey_graph(conn, "graphed", 1)
    steps = drawn.steps
    assert [s.kind for s in steps] == ["send", "split", "wait_for", "branch", "wait", "end"]
    assert (drawn.entry_kind, drawn.entry_detail) == ("event", "Signed Up")
    assert drawn.goals == ["Order Completed · 7d"]

    hello = _node(steps, "hello").counts
    assert (hello.reached, hello.sent, hello.held) == (8, 7, {"consent": 1})
    pick = _node(steps, "pick")
    assert pick.counts.reached == 8
    assert [(a.kind, a.label, a.taken, a.ends) for a in pick.arms] == [
        ("path", "a", len(treated), False),
        ("holdout", "", len(control), True),
    ]
    assert [a.weight for a in pick.arms] == [70, 30]
    assert _node(steps, "tag").counts.reached == len(treated)
    chat = _node(steps, "chat")
    assert chat.counts.reached == len(treated)
    assert (chat.counts.ended, chat.counts.converted) == (1, 1)  # the buyer, at the wait
    assert [(a.kind, a.taken, a.ends) for a in chat.arms] == [
        ("event", 2, False),
        ("timeout", len(treated) - 3, True),
    ]
    vip = _node(steps, "vip")
    assert vip.counts.reached == 2
    assert [(a.kind, a.taken) for a in vip.arms] == [("when", 1), ("otherwise", 1)]
    assert (_node(steps, "vip-sms").counts.reached, _node(steps, "vip-sms").counts.sent) == (1, 1)
    bye = _node(steps, "bye").counts
    assert (bye.reached, bye.ended) == (1, 1)
    later = _node(steps, "later").counts
    assert (later.reached, later.waiting) == (1, 1)
    assert _node(steps, "end").counts.reached == 0
    assert drawn.stats.control.entered == len(control)
    assert drawn.stats.treated.converted == 1


def test_the_graphs_step_ids_are_the_engines() -> None:
    """Every step drawn is the program's step at that place, for every ready-made journey
    and the one above: the counts recorded under a step id are drawn on that step."""
    from parcours.journeys import ready_made

    for source in [GRAPHED, *(ready_made_source(item.slug) or "" for item in ready_made())]:
        journey = versions.parse(source)
        program = compile_journey(journey)
        drawn = graph._Reader(program, {}, {})
        nodes, end = drawn.block(journey.steps, 0, 0)
        assert program.at(end).step_id == "end" and end == len(program.instructions) - 1
        ids = {i.step_id for i in program.instructions if i.op != "goto"}
        pending = list(nodes)
        while pending:
            node = pending.pop()
            assert node.step_id in ids, (journey.id, node.step_id)
            pending += [s for arm in node.arms for s in arm.steps]


# ---- the pages, over HTTP -----------------------------------------------------------------


def _signed_in(client: TestClient[Any], services: Services, role: str = "owner") -> str:
    """A user of `role` signed in on `client`; their CSRF token."""
    db, now = services.db, services.clock.now_ms()
    token = accounts.setup_link_token(db, now)
    assert token is not None
    owner = accounts.accept_invitation(
        db, token, email="owner@brand.example", name="Owner", password=PASSWORD, now=now
    )
    email = owner.email
    if role != "owner":
        _, link = accounts.invite(db, owner, email=f"{role}@brand.example", role=role, now=now)
        email = f"{role}@brand.example"
        accounts.accept_invitation(db, link, email="", name=role, password=PASSWORD, now=now)
    answer = client.post(
        "/console/login",
        data={"email": email, "password": PASSWORD, "next": "/console/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/").text)
    assert found is not None
    return found.group(1)


def _text(html: str) -> str:
    """The page's words, without its tags."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def test_the_journey_page_draws_the_graph_with_its_counts(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    ran = _run_the_graphed_journey(services, clock)
    _signed_in(client, services, "viewer")
    answer = client.get("/console/journeys/graphed", headers={"Accept-Language": "en"})
    assert answer.status_code == 200
    html = answer.text
    graph_part = html[html.index('<figure class="jgraph"') : html.index("</figure>")]
    words = _text(graph_part)
    assert "Entry on an event Signed Up 8 entered" in words
    assert "Send hello g-hello · email · marketing 8 reached 7 sent 1 held (no consent)" in words
    assert f"Path a (70 %) {len(ran['treated'])} went this way" in words
    assert f"Held out as the control group (30 %) {len(ran['control'])} went this way" in words
    assert "Wait later 2d 1 reached 1 waiting now" in words
    assert "1 converted (goal reached)" in words
    # The same counts as a table, a row per step (nested steps marked by their depth).
    table = graph_part[graph_part.index("<table") :]
    rows = {
        _text(cells[0]).split()[-1]: [_text(c) for c in cells[1:]]
        for cells in (
            re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
        )
    }
    assert rows["hello"] == ["8", "0", "7", "no consent: 1", "0", "0"]
    assert rows["chat"][0] == str(len(ran["treated"])) and rows["chat"][4:] == ["1", "1"]
    assert rows["bye"] == ["1", "0", "0", "0", "1", "0"]
    # In French, the same graph in the viewer's words.
    french = _text(client.get("/console/journeys/graphed", headers={"Accept-Language": "fr"}).text)
    assert "Envoyer hello g-hello · email · marketing 8 arrivés 7 envoyés 1 retenus" in french


def test_the_simulator_answers_on_the_page(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    source = ready_made_source("abandoned-cart")
    assert source is not None
    versions.save_draft(services.db, source, "mia@brand.example", clock.now_ms())
    opt_in(services, "ana")
    csrf = _signed_in(client, services, "marketer")
    page = client.get("/console/journeys/abandoned-cart").text
    assert "event: Cart Abandoned" in unescape(page)  # a first script, from the entry
    script = (
        "- at: +0m\n  event: Cart Abandoned\n"
        "  properties: {cart_id: c-1, total: 200, currency: EUR}\n"
    )
    answer = client.post(
        "/console/journeys/abandoned-cart/simulate",
        data={"csrf": csrf, "version": "1", "customer": "ana", "script": script, "days": "3"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200, answer.text
    assert "<html" not in answer.text  # the timeline alone, for HTMX
    words = _text(answer.text)
    assert "Entered" in words and "Would send · Step email-recap" in words
    assert "would send abandoned-cart-recap on email (marketing)" in words
    assert "The message, on email subject" in words  # as it would go: its subject...
    assert "Nothing was sent" in words
    with services.db.read() as conn:  # nothing of it in the brand's database
        assert versions.runs_of(conn, profiles.resolve(conn, "ana", "FR")) == []

    # A mistake in the script is named with its line.
    broken = "- at: +0m\n  event: Checkout Started\n- at: soon\n  event: Order Completed\n"
    answer = client.post(
        "/console/journeys/abandoned-cart/simulate",
        data={"csrf": csrf, "version": "1", "script": broken, "days": "1"},
        headers={"HX-Request": "true"},
    )
    assert "line 3: item 2: at:" in _text(answer.text)
    wrong_key = "- at: +0m\n  event: Checkout Started\n  propertys: {}\n"
    answer = client.post(
        "/console/journeys/abandoned-cart/simulate",
        data={"csrf": csrf, "version": "1", "script": wrong_key},
        headers={"HX-Request": "true"},
    )
    assert "line 1: item 1: unknown key 'propertys'" in _text(answer.text)
    # Without HTMX, the whole page comes back with the timeline or the problem in it.
    answer = client.post(
        "/console/journeys/abandoned-cart/simulate",
        data={"csrf": csrf, "version": "1", "script": broken, "days": "1"},
    )
    assert answer.status_code == 400 and "<html" in answer.text
    # A POST without the session's CSRF token runs nothing.
    refused = client.post(
        "/console/journeys/abandoned-cart/simulate",
        data={"version": "1", "script": script},
        headers={"HX-Request": "true"},
    )
    assert refused.status_code == 403


def test_two_versions_side_by_side_mark_exactly_the_changed_lines(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    source = ready_made_source("abandoned-cart")
    assert source is not None
    versions.publish(services.db, source, "mia@brand.example", "rob@brand.example", 0)
    lines = source.splitlines()
    changed = [
        line.replace("wait: 1h", "wait: 30m").replace("name: Abandoned cart", "name: Carts")
        for line in lines
        if "reentry: every_time" not in line
    ]
    changed.insert(changed.index("steps:"), "exits:\n  - event: Unsubscribed")
    second = "\n".join(changed) + "\n"
    versions.save_draft(services.db, second, "mia@brand.example", clock.now_ms())
    _signed_in(client, services, "viewer")
    journey_page = client.get("/console/journeys/abandoned-cart").text
    assert "/console/journeys/abandoned-cart/compare?b=2" in journey_page
    answer = client.get("/console/journeys/abandoned-cart/compare?b=2")  # against the live v1
    assert answer.status_code == 200
    html = answer.text
    marked: dict[str, list[tuple[str, str]]] = {"changed": [], "removed": [], "added": []}
    for kind, cells in re.findall(r'<tr class="diff-(\w+)">(.*?)</tr>', html, re.S):
        numbers = re.findall(r'<td class="diff-number">(\d*)</td>', cells)
        if kind != "same":
            marked[kind].append((numbers[0], numbers[1]))
    old = {n + 1: line for n, line in enumerate(lines)}
    new = {n + 1: line for n, line in enumerate(second.splitlines())}
    name_at, wait_at, reentry_at = (
        next(n for n, line in old.items() if needle in line)
        for needle in ("name: Abandoned cart", "wait: 1h", "reentry: every_time")
    )
    assert marked["removed"] == [(str(reentry_at), "")]
    assert (str(name_at), str(name_at)) in marked["changed"]
    # One line removed and two added above it: the wait is one line lower on the right.
    assert (str(wait_at), str(wait_at + 1)) in marked["changed"]
    assert len(marked["changed"]) == 2
    added_at = [n for n, line in new.items() if line in ("exits:", "  - event: Unsubscribed")]
    assert marked["added"] == [("", str(n)) for n in added_at]
    words = _text(html)
    assert "Lines changed: 2, removed: 1, added: 2." in words
    # Not by colour alone: each marked line says so in words, for screen readers too.
    table = _text(html[html.index("<tbody>") :])
    assert table.count("changed from:") == 2 and table.count("changed to:") == 2
    assert table.count("removed:") == 1 and table.count("added:") == 2
    # Two versions chosen by hand; the same version against itself is the same.
    same = _text(client.get("/console/journeys/abandoned-cart/compare?a=2&b=2").text)
    assert "The two versions are the same." in same
    assert client.get("/console/journeys/nowhere/compare").status_code == 404


def test_the_lifecycles_refusals_are_said_in_the_viewers_language(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    source = ready_made_source("abandoned-cart")
    assert source is not None
    versions.save_draft(services.db, source, "mia@brand.example", clock.now_ms())
    broken = source.replace("template: abandoned-cart-recap", "template: nowhere-recap")
    versions.save_draft(services.db, broken, "mia@brand.example", clock.now_ms())
    csrf = _signed_in(client, services)
    french = {"Accept-Language": "fr-FR,fr;q=0.9"}
    base = "/console/journeys/abandoned-cart/versions"
    # A move its status does not allow (a hand-made request: the page offers no button).
    answer = client.post(f"{base}/1/go_live", data={"csrf": csrf}, headers=french)
    assert answer.status_code == 409
    assert "« Mettre en ligne » n’est pas possible pour la version 1 : elle est brouillon." in (
        _text(answer.text)
    )
    # A version whose step names a template that does not exist, with the step's line.
    answer = client.post(f"{base}/2/submit", data={"csrf": csrf}, headers=french)
    assert answer.status_code == 409
    words = _text(answer.text)
    assert "Cette version ne peut pas avancer telle quelle" in words
    line = 1 + next(n for n, text in enumerate(broken.splitlines()) if "nowhere-recap" in text)
    assert f"ligne {line} : steps[2].send.template unknown template 'nowhere-recap'" in words
    # The domain keeps its English for the API.
    with pytest.raises(versions.LifecycleError, match="cannot go live version 1"):
        versions.change_status(services.db, "abandoned-cart", 1, "go_live", "x", clock.now_ms())
    english = client.post(
        f"{base}/1/go_live", data={"csrf": csrf}, headers={"Accept-Language": "en"}
    )
    assert "“Go live” is not possible for version 1: it is draft." in _text(english.text)


SAID = """\
id: cart-words
name: Cart words
entry: {event: Cart Abandoned, key: properties.cart_id}
steps:
  - id: recap
    send: {channel: email, template: abandoned-cart-recap, purpose: marketing}
  - id: nudge
    send: {channel: sms, template: abandoned-cart-last-call, purpose: marketing}
  - id: later
    wait: 1d
  - id: big
    branch:
      - when: {entry.properties.total: {gte: 150}}
        steps:
          - id: call
            task: {title: Appeler pour le panier, assignee: "team:care"}
      - otherwise: []
"""
SAID_SCRIPT = (
    "- at: +0m\n  type: identify\n"
    "  traits: {email: ana@example.com, phone: '+33612345678',\n"
    "           consent: {email: {marketing: true}}}\n"
    "- at: +1m\n  event: Cart Abandoned\n"
    "  properties: {cart_id: c-1, total: 200, currency: EUR}\n"
)


def _said_rows(html: str) -> list[str]:
    """Each moment's sentence of a simulation's timeline."""
    return [_text(what) for what in re.findall(r'<p class="sim-what">(.*?)</p>', html, re.S)]


def test_the_simulation_says_each_decision_in_the_viewers_language(
    client: TestClient[Any], services: Services, clock: SimulatedClock
) -> None:
    """A send, a hold for consent, a wait (until a date in the viewer's locale), a branch,
    a task and the end: each said in French on a French page, in English on an English
    one, the reasons by the codes the messages' page reads; the API's words are the same."""
    versions.save_draft(services.db, SAID, "mia@brand.example", clock.now_ms())
    csrf = _signed_in(client, services, "marketer")
    asked = {"csrf": csrf, "version": "1", "script": SAID_SCRIPT, "days": "2"}
    hx = {"HX-Request": "true"}

    french = client.post(
        "/console/journeys/cart-words/simulate",
        data=asked,
        headers={**hx, "Accept-Language": "fr"},
    )
    assert french.status_code == 200, french.text
    said = _said_rows(french.text)
    assert said[:2] == ["entré (déclencheur : Cart Abandoned)", said[1]], said
    assert said[1] == "enverrait abandoned-cart-recap par email (marketing)", said
    assert said[2] == (
        "abandoned-cart-last-call retenu : pas de consentement marketing pour sms (jamais donné)"
    ), said
    # The wait's end in the viewer's locale (the simulation starts at 14:13 UTC, 21 September),
    # and how long after the start the branch comes, in days said in French.
    assert re.fullmatch(r"attend jusqu’au 22 sept\. 2026, \d\d:\d\d:\d\d", said[3]), said
    assert "+1 j 00:01" in _text(french.text)
    assert said[4:] == [
        "embranchement à big : voie 1",
        "tâche pour une personne : Appeler pour le panier",
        "sorti du parcours : terminé",
    ], said
    english_words = re.compile(
        r"\b(entered|trigger|would|send|held|back|consent|never|given|waits|until|branched|"
        r"arm|task|person|exited|completed|emits)\b"
    )
    assert not [line for line in said if english_words.search(line)], said
    # The message as it would go: its fields named in French too (its words are the
    # customer's language's, not the viewer's).
    assert "Le message, par email objet" in _text(french.text)

    english = client.post(
        "/console/journeys/cart-words/simulate",
        data=asked,
        headers={**hx, "Accept-Language": "en"},
    )
    # A script's mistake is said in the viewer's language too, with its line and item.
    broken = "- at: +0m\n  event: Cart Abandoned\n- at: soon\n  event: Order Completed\n"
    refused = client.post(
        "/console/journeys/cart-words/simulate",
        data={**asked, "script": broken},
        headers={**hx, "Accept-Language": "fr"},
    )
    assert "ligne 3 : élément 2 : at : « soon » n’est ni +DURÉE" in _text(refused.text)
    refused = client.post(
        "/console/journeys/cart-words/simulate",
        data={**asked, "script": "- at: +0m\n  event: Cart Abandoned\n  propertys: {}\n"},
        headers={**hx, "Accept-Language": "fr"},
    )
    assert "ligne 1 : élément 1 : clé inconnue « propertys » (connues :" in _text(refused.text)

    said = _said_rows(english.text)
    assert said[:3] == [
        "entered (trigger: Cart Abandoned)",
        "would send abandoned-cart-recap on email (marketing)",
        "held back abandoned-cart-last-call: no marketing consent for sms (never given)",
    ], said
    assert re.fullmatch(r"waits until Sep 22, 2026, \d+:\d\d:\d\d\W?[AP]M", said[3]), said
    assert said[4:] == [
        "branched at big: arm 1",
        "task for a person: Appeler pour le panier",
        "exited: completed",
    ], said


def test_each_reason_read_back_has_words_in_english_and_french() -> None:
    """The reasons the messages', customers' and simulator's pages say by their codes, and
    the simulator's sentences: none of them falls back to the English text in French."""
    from parcours.messaging import reasons
    from parcours.runtime.i18n import LOCALES_DIR

    keys = {
        locale: {
            key
            for path in (LOCALES_DIR / locale).glob("*.json")
            for key in json.loads(path.read_text(encoding="utf-8"))
        }
        for locale in ("en", "fr")
    }
    for locale in ("en", "fr"):
        missing = [c for c, _ in reasons._PATTERNS if f"support.reason.{c}" not in keys[locale]]
        assert missing == [], (locale, missing)
    said = {key for key in keys["en"] if key.startswith("console.journeys.said.")}
    assert said and said <= keys["fr"]
