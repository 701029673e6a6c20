"""Every example in README.md and docs/*.md runs against the real application.

Each fenced code block is taken by its language, and what it shows is done for real:

- `yaml`: a journey goes through the whole review (draft, submit, approval by a second
  person, go-live); a segment is defined; message templates are saved; a Prometheus
  scrape configuration scrapes `/metrics` with the scheme it names.
- `json`: a tracking call (`"type": "identify"`, ...) is posted to `/v1/<type>`; a log
  line or a `/readyz` answer is compared with a real one (the same fields).
- `http`: a request (`METHOD /path`, headers, a blank line, the body) is sent, with the
  right key for the route (admin for `/api/`, write for `/v1/`); a following `http` block
  that starts `HTTP/1.1 <status>` is its documented answer: the status, and every field it
  shows, equal (`"..."` stands for any value).
- `toml`: settings (`[channels.*]`, `[webhooks]`) are loaded as Parcours loads them at
  start, and the providers built; the blocks of one document build on each other (the
  later ones add tables such as `[channels.push.fcm]`). Files under `/etc/` are made up
  for the test (keys, certificates, service accounts), and `*_env` variables are set.
- `sh`: each `parcours ...` command exists (its `--help` works), extras named in a
  `pip install ".[extra]"` exist, and `PARCOURS_*` variables are settings.
- `html`: each `<script src>` is served, and each `data-*` attribute is read by it.
- `python`: runs.
- `text`: a diagram, not code.

The blocks of a document run in order against one application (so an example may use
what an earlier one made). A block that is deliberately partial says so just before it,
with `<!-- not-a-test: the reason -->`; there are very few.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from litestar.testing import TestClient
from typer.testing import CliRunner

from parcours.app import create_app
from parcours.channels.push import make_vapid_key
from parcours.channels.registry import Providers
from parcours.cli import app as cli
from parcours.runtime.keys import create_key
from parcours.runtime.logs import configure_logging, remove_logging
from parcours.runtime.settings import Settings, load_settings
from parcours.services import Services
from tests.conftest import ADMIN_KEY, WRITE_KEY

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPENING = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
NOT_A_TEST = re.compile(r"<!--\s*not-a-test:\s*(?P<reason>\S.*?)\s*-->")
METRICS_TOKEN = "docs-examples-scraper"
LANGUAGES = ("yaml", "json", "http", "toml", "sh", "html", "python", "text")
MOST_EXCEPTIONS = 3  # blocks marked not-a-test, across all the documents


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    lang: str
    text: str
    not_a_test: str | None

    def __str__(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line} ({self.lang or 'no language'})"


def blocks(document: Path) -> list[Block]:
    """The fenced code blocks of a document, with the marker before each, if any."""
    lines = document.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    number = 0
    while number < len(lines):
        opening = OPENING.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent, start = len(opening["indent"]), number
        body: list[str] = []
        number += 1
        while number < len(lines) and not re.match(r"^ *```\s*$", lines[number]):
            body.append(lines[number][indent:] if not lines[number][:indent].strip() else "")
            number += 1
        number += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = NOT_A_TEST.search(before)
        text = "\n".join(body) + "\n"
        found.append(Block(document, start + 1, opening["lang"], text, marker and marker["reason"]))
    return found


def test_every_block_says_its_language_and_few_are_left_out() -> None:
    every = [block for document in DOCUMENTS for block in blocks(document)]
    assert len(every) > 20
    unknown = [str(b) for b in every if b.lang not in LANGUAGES]
    assert unknown == [], f"give these blocks one of {', '.join(LANGUAGES)}"
    left_out = [b for b in every if b.not_a_test]
    assert len(left_out) <= MOST_EXCEPTIONS, [f"{b}: {b.not_a_test}" for b in left_out]


def test_blocks_are_read_with_their_lines_and_markers(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "# T\n\n```yaml\na: 1\n```\n\n<!-- not-a-test: a fragment -->\n```json\n{}\n```\n"
        "- item:\n\n  ```toml\n  [x]\n  y = 1\n  ```\n"
    )
    assert [(b.line, b.lang, b.text, b.not_a_test) for b in blocks(document)] == [
        (3, "yaml", "a: 1\n", None),
        (8, "json", "{}\n", "a fragment"),
        (13, "toml", "[x]\ny = 1\n", None),
    ]


def test_a_documented_answer_is_compared_field_by_field() -> None:
    real = {"id": 7, "status": "live", "tags": ["a", "b"], "extra": True}
    _same({"id": "...", "status": "live", "tags": ["a", "..."]}, real, "$")
    for documented, said in (
        ({"status": "draft"}, "$.status: documented 'draft', answered 'live'"),
        ({"missing": 1}, "$.missing is not in the answer"),
        ({"tags": ["a"]}, "$.tags"),
    ):
        with pytest.raises(AssertionError, match=re.escape(said)):
            _same(documented, real, "$")


# ---- running a document's examples --------------------------------------------------------


@dataclass
class Run:
    """What the examples of one document share: the application and what they made."""

    client: TestClient[Any]
    services: Services
    reviewer: str
    folder: Path
    monkeypatch: pytest.MonkeyPatch
    settings: dict[str, Any] = field(default_factory=dict)  # the TOML blocks so far
    answer_due: tuple[Block, Any] | None = None  # a request whose answer may follow


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_example_runs(
    document: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = Services.open(settings.with_overrides(metrics_token=METRICS_TOKEN))
    try:
        reviewer = create_key(services.db, "admin", "docs reviewer")
        with TestClient(app=create_app(services, close_on_shutdown=False)) as client:
            run = Run(client, services, reviewer, tmp_path, monkeypatch)
            failures = []
            for block in blocks(document):
                if block.not_a_test:
                    continue
                try:
                    if block.lang != "http":
                        _unanswered_request_succeeded(run)
                    runner = RUNNERS.get(block.lang)
                    assert runner is not None, f"say the language: one of {', '.join(LANGUAGES)}"
                    runner(run, block)
                except Exception as exc:  # every failing example is reported, not the first
                    failures.append(f"{block}: {type(exc).__name__}: {exc}")
            try:
                _unanswered_request_succeeded(run)
            except AssertionError as exc:
                failures.append(f"{document.name}, its last request: {exc}")
    finally:
        services.close()
    assert not failures, "\n".join(failures)


def _yaml(run: Run, block: Block) -> None:
    document = yaml.safe_load(block.text)
    assert isinstance(document, dict), "a YAML example is a mapping"
    if "entry" in document and "steps" in document:
        _journey_goes_live(run, block.text, document["id"])
    elif "conditions" in document:
        answer = run.client.post("/api/segments", content=block.text, headers=_admin())
        assert answer.status_code == 201, answer.text
    elif "scrape_configs" in document:
        for job in document["scrape_configs"]:
            assert job["authorization"]["type"] == "Bearer", job
            scheme = job["authorization"]["type"]
            headers = {"Authorization": f"{scheme} {METRICS_TOKEN}"}
            answer = run.client.get(job.get("metrics_path", "/metrics"), headers=headers)
            assert answer.status_code == 200 and "parcours_" in answer.text, answer.text
    elif all(_is_template(value) for value in document.values()):
        for template_id, content in document.items():
            body = yaml.safe_dump(content, allow_unicode=True)
            answer = run.client.put(f"/api/templates/{template_id}", content=body, headers=_admin())
            assert answer.status_code == 200, answer.text
    else:
        raise AssertionError("not a journey, a segment, templates nor a scrape configuration")


def _is_template(value: Any) -> bool:
    return isinstance(value, dict) and all(re.fullmatch(r"[a-z]{2}(-[A-Z]{2})?", k) for k in value)


def _journey_goes_live(run: Run, source: str, journey_id: str) -> None:
    draft = run.client.post(
        "/api/journeys", content=source, headers=_admin() | {"Content-Type": "application/yaml"}
    )
    assert draft.status_code == 201, draft.text
    base = f"/api/journeys/{journey_id}/versions/{draft.json()['version']}"
    for move, key in (("submit", ADMIN_KEY), ("approve", run.reviewer), ("go_live", run.reviewer)):
        answer = run.client.post(f"{base}/{move}", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, f"{move}: {answer.text}"
    assert answer.json()["status"] == "live"


def _json(run: Run, block: Block) -> None:
    document = json.loads(block.text)
    if document.get("type") in ("identify", "track", "page", "screen", "group", "alias"):
        answer = run.client.post(f"/v1/{document['type']}", json=document, auth=(WRITE_KEY, ""))
        assert answer.status_code == 200 and answer.json()["success"] is True, answer.text
    elif {"time", "level", "logger", "message"} <= document.keys():
        stream = io.StringIO()
        handler = configure_logging("info", "json", [], stream)
        try:
            run.client.request(
                document["method"], document["route"], headers={"X-Request-Id": "docs"}
            )
        finally:
            remove_logging(handler)
        [line] = [
            json.loads(text)
            for text in stream.getvalue().splitlines()
            if json.loads(text).get("request_id") == "docs"
        ]
        assert sorted(document) == sorted(line)
        assert (document["level"], document["logger"]) == (line["level"], line["logger"])
        assert line["message"].startswith(f"{document['method']} {document['route']} ")
    elif {"status", "failed"} <= document.keys():
        real = run.client.get("/readyz").json()  # ready: no `failed` to name
        assert sorted(set(document) - {"failed"}) == sorted(real)
        assert sorted(document["workers"]) == sorted(real["workers"])
    else:
        raise AssertionError("not a tracking call, a log line nor a /readyz answer")


def _http(run: Run, block: Block) -> None:
    head, _, body = block.text.partition("\n\n")
    first, *header_lines = head.splitlines()
    if first.startswith("HTTP/"):
        assert run.answer_due is not None, "an answer that follows no request"
        request, real = run.answer_due
        run.answer_due = None
        status = int(first.split()[1])
        assert real.status_code == status, f"{request}: {real.status_code} {real.text}"
        if body.strip():
            _same(json.loads(body), real.json(), "$")
        return
    _unanswered_request_succeeded(run)
    method, target = first.split()
    headers = dict(line.split(": ", 1) for line in header_lines)
    headers.pop("Authorization", None)
    auth = None
    if target.startswith("/api/"):
        headers |= _admin()
    elif target.startswith("/v1/"):
        auth = (WRITE_KEY, "")
    real = run.client.request(method, target, content=body.encode(), headers=headers, auth=auth)
    run.answer_due = (block, real)  # the answer shown next, if any, says what to expect


def _unanswered_request_succeeded(run: Run) -> None:
    """A request shown without its answer must succeed; one whose answer is shown (an
    error, for example) is checked against that answer instead."""
    if run.answer_due is None:
        return
    request, real = run.answer_due
    run.answer_due = None
    assert real.status_code < 400, f"{request}: {real.status_code} {real.text}"


def _same(documented: Any, real: Any, where: str) -> None:
    if documented == "...":
        return
    if isinstance(documented, dict):
        assert isinstance(real, dict), f"{where}: {real!r}"
        for key, value in documented.items():
            assert key in real, f"{where}.{key} is not in the answer"
            _same(value, real[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(real, list) and len(real) == len(documented), f"{where}: {real!r}"
        for index, (one, other) in enumerate(zip(documented, real, strict=True)):
            _same(one, other, f"{where}[{index}]")
    else:
        assert documented == real, f"{where}: documented {documented!r}, answered {real!r}"


def _toml(run: Run, block: Block) -> None:
    run.settings = _merged(run.settings, tomllib.loads(block.text))
    table = _made_up(run, run.settings)
    environ = {
        f"PARCOURS_{name.upper()}": json.dumps(value) if isinstance(value, dict) else str(value)
        for name, value in table.items()
    }
    loaded = load_settings(environ=environ | {"PARCOURS_CONFIG": str(_empty(run))})
    providers = Providers.from_settings(
        loaded.channels, "https://parcours.example.com", make_vapid_key()
    )
    providers.close()


def _merged(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def _made_up(run: Run, value: Any) -> Any:
    """The settings with every file under /etc/ made, and every `*_env` variable set."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_env") and isinstance(item, str):
                run.monkeypatch.setenv(item, "a documented secret, made up for the test")
        return {key: _made_up(run, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_made_up(run, item) for item in value]
    if isinstance(value, str) and value.startswith("/etc/"):
        return str(_material(run.folder, Path(value).name))
    return value


def _empty(run: Run) -> Path:
    path = run.folder / "empty.toml"
    path.write_text("")
    return path


def _material(folder: Path, name: str) -> Path:
    """A file of the kind its name says: a key (`*-key.pem`, `dkim*.pem`, `*.p8`), a
    certificate (`*.pem`, for the key `<name>-key.pem` when there is one), a service
    account (`*.json`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = folder / name
    if path.exists():
        return path
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    if name.endswith(".p8"):
        path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(pem, pkcs8, plain))
    elif name.endswith(".json"):
        key = _rsa_key(folder, name).private_bytes(pem, pkcs8, plain).decode()
        account = {
            "type": "service_account",
            "project_id": "docs-example",
            "private_key_id": "1",
            "private_key": key,
            "client_email": "docs@docs-example.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        path.write_text(json.dumps(account))
    elif name.endswith("-key.pem") or name.startswith("dkim"):
        key_of = name.removesuffix("-key.pem").removesuffix(".pem")
        path.write_bytes(_rsa_key(folder, key_of).private_bytes(pem, pkcs8, plain))
    else:
        path.write_bytes(_certificate(_rsa_key(folder, name.removesuffix(".pem")), name))
    return path


def _rsa_key(folder: Path, stem: str) -> Any:
    """One RSA key per stem, so that `pass.pem` certifies the key in `pass-key.pem`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    kept = folder / f".{stem}.key"
    if kept.exists():
        return serialization.load_pem_private_key(kept.read_bytes(), None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kept.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def _certificate(key: Any, name: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _sh(run: Run, block: Block) -> None:
    text = block.text.replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for command in re.split(r"&&|\|\||;", line):
            words = shlex.split(command)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                name = words.pop(0).split("=", 1)[0]
                if name.startswith("PARCOURS_"):
                    known = Settings.__dataclass_fields__
                    assert name.removeprefix("PARCOURS_").lower() in known, name
            if words and Path(words[0]).name == "parcours":
                path = [w for w in words[1:] if not w.startswith("-")]
                answer = CliRunner().invoke(cli, [*path, "--help"])
                assert answer.exit_code == 0, f"{command.strip()}: {answer.output}"
            for extra in re.findall(r"\.\[([\w,-]+)\]", command):
                project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                for name in extra.split(","):
                    assert name in project["optional-dependencies"], f"no extra {name!r}"


def _html(run: Run, block: Block) -> None:
    scripts = re.findall(r"<script\b([^>]*)>", block.text)
    assert scripts, "no <script> in the example"
    for attributes in scripts:
        source = re.search(r'\bsrc="([^"]+)"', attributes)
        assert source is not None, attributes
        address = urlsplit(source.group(1))
        served = run.client.get(f"{address.path}?{address.query}")
        assert served.status_code == 200, f"{address.path}: {served.status_code}"
        assert "javascript" in served.headers["content-type"]
        for name in re.findall(r"\bdata-([a-z-]+)=", attributes):
            camel = re.sub(r"-([a-z])", lambda m: m.group(1).upper(), name)
            assert f"data-{name}" in served.text or camel in served.text, f"data-{name} unread"


def _python(run: Run, block: Block) -> None:
    exec(compile(block.text, str(block), "exec"), {"__name__": "docs_example"})


def _text(run: Run, block: Block) -> None:
    return None  # a diagram


RUNNERS = {
    "yaml": _yaml,
    "json": _json,
    "http": _http,
    "toml": _toml,
    "sh": _sh,
    "html": _html,
    "python": _python,
    "text": _text,
}


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(autouse=True)
def _no_local_config(tmp_path: Path) -> Iterator[None]:
    """The settings the examples load are theirs alone (no parcours.toml of the tree)."""
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield
    finally:
        os.chdir(here)
