"""`parcours bench channels`: emails per second through SMTP with DKIM signing, against the
floor of the same messages, pre-built and pre-signed, sent by a bare smtplib loop over one
connection; and templates rendered per second.

The SMTP server is aiosmtpd's sink in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from parcours.bench.common import (
    email_identities,
    free_port,
    outbox_states,
    psutil,
    scratch_database,
)

CART = {
    "event": "Checkout Started",
    "properties": {
        "checkout_id": "k-1",
        "total": "264.00",
        "currency": "EUR",
        "products": [
            {"name": "Trench coat", "quantity": 1},
            {"name": "Silk scarf", "quantity": 2},
            {"name": "Ankle boots", "quantity": 1},
        ],
    },
}


class SinkServer:
    """aiosmtpd's Sink handler (accepts and drops every message) in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{self.port}",
                "-c",
                "aiosmtpd.handlers.Sink",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=1).quit()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the SMTP sink did not start")

    def cpu(self) -> float:
        times = psutil().Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def dkim_key(directory: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return path


def email_settings(port: int, key: Path) -> dict[str, Any]:
    return {
        "email": {
            "provider": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "news@maison.example",
            "from_name": "Maison",
            "return_path": "bounces+{id}@maison.example",
            "dkim_selector": "s1",
            "dkim_key_file": str(key),
        },
        "sandbox": {"fail_rate": 0.0, "delivered_rate": 0.0},  # no feedback jobs
    }


def pipeline(database_url: str, data_dir: Path, count: int, port: int) -> dict[str, Any]:
    """Intents for `count` customers in the outbox; the worker renders, claims, signs and
    sends them all, recording each result."""
    from parcours.messaging.outbox import Intent, add_intent
    from parcours.runtime.clock import SimulatedClock, iso
    from parcours.runtime.settings import Settings
    from parcours.services import Services
    from parcours.tracking import parse_event

    start = int(datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp() * 1000)
    clock = SimulatedClock(start)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        channels=email_settings(port, dkim_key(data_dir.parent)),
    )
    services = Services.open(settings, clock=clock)
    encoder = msgspec.json.Encoder()
    try:
        for offset in range(0, count, 1000):
            services.writer.append_sync(
                [
                    parse_event(
                        encoder.encode(
                            {
                                "type": "identify",
                                "userId": f"c-{n}",
                                "messageId": f"id-{n}",
                                "timestamp": iso(start - 1000),
                                "traits": {"email": f"c-{n}@example.com", "first_name": "Alex"},
                            }
                        ),
                        source="bench",
                        received_at=start,
                    )
                    for n in range(offset, min(count, offset + 1000))
                ]
            )
        with services.db.write() as conn:
            ids = email_identities(conn)
            for n in range(count):
                address = f"c-{n}@example.com"
                add_intent(
                    conn,
                    Intent(
                        f"bench:{n}:0", ids[address], "email", "abandoned-cart-recap", "marketing"
                    ),
                    start,
                    {"event": CART, "rest": []},
                    address,
                )
        began, cpu = time.perf_counter(), _cpu()
        while services.worker.run_due():
            pass
        elapsed, cpu_used = time.perf_counter() - began, _cpu() - cpu
        with services.db.read() as conn:
            states = outbox_states(conn)
    finally:
        services.close()
    return {
        "messages": count,
        "states": states,
        "seconds": round(elapsed, 2),
        "per_s": round(count / elapsed),
        "cpu_ms_per_message": round(cpu_used / count * 1000, 2),
    }


def _cpu() -> float:
    """CPU seconds used by this process so far (all threads)."""
    times = os.times()
    return times.user + times.system


def floor(count: int, port: int, key: Path) -> dict[str, Any]:
    """The same messages, built and DKIM-signed beforehand, sent by smtplib in a loop."""
    from parcours.channels.base import OutgoingMessage
    from parcours.channels.email import SmtpProvider
    from parcours.messaging import templates

    provider = SmtpProvider.from_config(email_settings(port, key)["email"])
    rendered = templates.render(
        templates.shipped()["abandoned-cart-recap"], "email", _context(), "en"
    )
    messages = [
        provider.build(
            OutgoingMessage(
                f"floor:{n}:0",
                n,
                n,
                "email",
                "marketing",
                f"c-{n}@example.com",
                rendered.fields,
                "en",
                {"unsubscribe": f"https://p.example/u/{n}"},
            )
        )
        for n in range(count)
    ]
    connection = smtplib.SMTP("127.0.0.1", port)
    began, cpu = time.perf_counter(), _cpu()
    for n, raw in enumerate(messages):
        connection.sendmail("bounces@maison.example", [f"c-{n}@example.com"], raw)
    elapsed, cpu_used = time.perf_counter() - began, _cpu() - cpu
    connection.quit()
    return {
        "messages": count,
        "seconds": round(elapsed, 2),
        "per_s": round(count / elapsed),
        "cpu_ms_per_message": round(cpu_used / count * 1000, 2),
    }


def _context() -> dict[str, Any]:
    return {
        "customer": {"first_name": "Alex"},
        "event": CART,
        "cart": CART["properties"],
        "order": None,
        "brand": {"name": "Maison", "url": "https://maison.example"},
        "links": {
            "shop": "https://maison.example",
            "unsubscribe": "https://p.example/u/x",
            "preferences": "https://p.example/p/x",
        },
        "message": {"channel": "email", "purpose": "marketing"},
    }


def rendering(count: int) -> dict[str, Any]:
    """Templates rendered per second (the MJML email, compiled once, Jinja per message),
    and the same for a one-line SMS."""
    from parcours.messaging import templates

    results: dict[str, Any] = {}
    for name, template_id, channel in (
        ("email", "abandoned-cart-recap", "email"),
        ("sms", "abandoned-cart-last-call", "sms"),
    ):
        template = templates.shipped()[template_id]
        templates.render(template, channel, _context(), "en")  # compile once
        began = time.perf_counter()
        for _ in range(count):
            templates.render(template, channel, _context(), "en")
        results[name] = round(count / (time.perf_counter() - began))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parcours bench channels", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    psutil()  # before anything runs: a missing psutil is said at once
    results: dict[str, Any] = {"database": "postgresql" if args.postgres else "sqlite"}
    sink = SinkServer()
    try:
        with scratch_database(args.postgres) as (url, directory):
            sink_cpu = sink.cpu()
            results["pipeline"] = pipeline(url, directory / "data", args.messages, sink.port)
            results["pipeline"]["sink_cpu_ms_per_message"] = round(
                (sink.cpu() - sink_cpu) / args.messages * 1000, 2
            )
            sink_cpu = sink.cpu()
            results["floor"] = floor(args.messages, sink.port, dkim_key(directory))
            results["floor"]["sink_cpu_ms_per_message"] = round(
                (sink.cpu() - sink_cpu) / args.messages * 1000, 2
            )
    finally:
        sink.stop()
    results["rendered_per_s"] = rendering(2000)
    results["fraction_of_floor"] = round(
        results["pipeline"]["per_s"] / results["floor"]["per_s"], 3
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    p, f, r = results["pipeline"], results["floor"], results["rendered_per_s"]
    print(f"database: {results['database']}")
    print(
        f"emails through the pipeline (render, claim, DKIM, SMTP, record): {p['per_s']:,}/s "
        f"({p['messages']:,} in {p['seconds']} s; states {p['states']}); CPU per message: "
        f"{p['cpu_ms_per_message']} ms ours, {p['sink_cpu_ms_per_message']} ms the server's"
    )
    print(
        f"floor (pre-built, pre-signed, bare smtplib loop): {f['per_s']:,}/s; CPU per "
        f"message: {f['cpu_ms_per_message']} ms the loop's, {f['sink_cpu_ms_per_message']} ms "
        "the server's"
    )
    print(f"fraction of the floor: {results['fraction_of_floor']:.0%} (target >= 70%)")
    print(f"templates rendered: email {r['email']:,}/s, SMS {r['sms']:,}/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
