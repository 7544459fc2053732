"""Webhooks: each event a webhook wants reaches its receiver signed as Standard Webhooks say, at least
once, in order for one image, retried with backoff while the receiver fails, and never held up by
another receiver. Receivers are real HTTP servers that verify what they get with the Standard
Webhooks library, as a user's would."""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon.testing
import pytest
import requests
import standardwebhooks

from heartbeat.app import ServedApp, build_app
from heartbeat.config import UrlAllowList
from heartbeat.db.models import Delivery, Webhook
from heartbeat.events.delivery import CONCURRENT_SENDS, WebhookSender
from heartbeat.events.webhooks import GONE
from heartbeat.service import Service
from helpers import claim, distinct_images, register, upload

LOOPBACK = UrlAllowList.parse("127.0.0.0/8")
RETRY_SECONDS = 3600.0


class Receiver:
    """A webhook receiver on a loopback port: it answers each POST with the next of ``statuses`` (a code,
    or a code and headers; 200 once they run out), or, when ``hang``, accepts and never answers."""

    def __init__(self, statuses: list[Any] | None = None, *, hang: bool = False, port: int = 0, pause: float = 0):
        self.statuses = list(statuses or [])
        self.hang = hang
        self.pause = pause
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.condition = threading.Condition()
        self.in_flight = 0
        self.most_in_flight = 0
        self.keys_in_flight: list[str] = []  # the image (or software) of each request being answered
        self.overlapping: list[str] = []  # keys that arrived while one of theirs was being answered
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hang:
                    receiver.released.wait(30)
                    return
                event = json.loads(body)
                key = event.get("image_id") or event.get("software") or ""
                with receiver.condition:
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight)
                    if key in receiver.keys_in_flight:
                        receiver.overlapping.append(key)
                    receiver.keys_in_flight.append(key)
                time.sleep(receiver.pause)
                with receiver.condition:
                    receiver.in_flight -= 1
                    receiver.keys_in_flight.remove(key)
                    receiver.received.append((dict(self.headers.items()), body))
                    answer = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.condition.notify_all()
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        # A listen backlog as a web server's: the default 5 overflows under 8 concurrent sends on a
        # loaded machine, and each lost SYN costs its sender a second or more.
        server_class = type("Server", (http.server.ThreadingHTTPServer,), {"request_queue_size": 128})
        self.server = server_class(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout_seconds: float = 10) -> bool:
        with self.condition:
            return self.condition.wait_for(lambda: len(self.received) >= count, timeout_seconds)

    def events(self, secret: str) -> list[dict[str, Any]]:
        """Every body received, each verified as a receiver verifies it (raises if one does not verify)."""
        with self.condition:
            return [standardwebhooks.Webhook(secret).verify(body, headers) for headers, body in self.received]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class Setup:
    served: ServedApp
    client: falcon.testing.TestClient
    new_sender: Callable[..., WebhookSender]

    def sequence(self) -> None:
        self.served.service.sequencer.catch_up()

    def hook(self, url: str, **fields: Any) -> dict[str, Any]:
        answer = self.client.simulate_post("/v1/webhooks", json={"url": url, **fields})
        assert answer.status_code == 201, answer.text
        return answer.json

    def deliveries(self, hook: dict[str, Any], **params: str) -> list[dict[str, Any]]:
        answer = self.client.simulate_get(f"/v1/webhooks/{hook['id']}/deliveries", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json["deliveries"]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kwargs: Any) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def setup(settings, database, storage, clock) -> Iterator[Setup]:
    changed = dataclasses.replace(settings, url_allow=LOOPBACK, webhook_retry_seconds=RETRY_SECONDS)
    served = build_app(Service(changed, database, storage=storage, clock=clock))
    senders: list[WebhookSender] = []

    def new_sender(**options: Any) -> WebhookSender:
        options = {"timeout_seconds": 1.0, "jitter": lambda: 1.0, "poll_seconds": 0.05} | options
        senders.append(
            WebhookSender(
                database,
                served.service.sequencer,
                served.service.webhooks,
                clock,
                allow=LOOPBACK,
                retry_seconds=RETRY_SECONDS,
                **options,
            )
        )
        return senders[-1]

    yield Setup(served, falcon.testing.TestClient(served.app), new_sender)
    for sender in senders:
        sender.stop()


def drain(sender: WebhookSender) -> int:
    """Run the sender by hand until no webhook is due; how many attempts it made."""
    tried = 0
    while (count := sender.run_once()) is not None:
        tried += count
    return tried


def upload_images(client, count: int) -> list[str]:
    return [upload(client, data).json["id"] for data in distinct_images(count)]


def test_a_webhook_is_made_with_its_secret_shown_once_then_read_changed_and_removed(setup, receivers):
    receiver = receivers()
    made = setup.hook(receiver.url, types=["job.done"], software="face_detection")
    assert made["url"] == receiver.url and made["types"] == ["job.done"] and made["software"] == "face_detection"
    assert made["secret"].startswith("whsec_") and len(base64.b64decode(made["secret"][6:])) >= 24
    shown = {key: value for key, value in made.items() if key != "secret"}
    assert setup.client.simulate_get(f"/v1/webhooks/{made['id']}").json == shown
    assert setup.client.simulate_get("/v1/webhooks").json == {"webhooks": [shown], "next_cursor": None}
    changed = setup.client.simulate_patch(f"/v1/webhooks/{made['id']}", json={"types": None, "software": None})
    assert changed.status_code == 200 and changed.json["types"] is None and changed.json["software"] is None
    assert "secret" not in changed.json
    assert setup.client.simulate_delete(f"/v1/webhooks/{made['id']}").status_code == 204
    assert setup.client.simulate_get(f"/v1/webhooks/{made['id']}").status_code == 404
    assert setup.client.simulate_get(f"/v1/webhooks/{made['id']}/deliveries").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://127.0.0.1/hook"},
        {"url": "http://127.0.0.1/hook", "types": ["job.exploded"]},
        {"url": "http://127.0.0.1/hook", "types": []},
        {"url": "http://127.0.0.1/hook", "colour": "red"},
        {},
    ],
)
def test_a_malformed_webhook_is_refused_with_400(setup, body):
    assert setup.client.simulate_post("/v1/webhooks", json=body).status_code == 400


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://[::1]/", "http://169.254.169.254/"]
)
def test_a_url_to_an_internal_address_is_refused_with_422_unless_allowed(settings, database, storage, clock, url):
    client = falcon.testing.TestClient(build_app(Service(settings, database, storage=storage, clock=clock)).app)
    answer = client.simulate_post("/v1/webhooks", json={"url": url})
    assert answer.status_code == 422, answer.text
    assert client.simulate_get("/v1/webhooks").json["webhooks"] == []


def test_changing_the_url_to_an_internal_one_is_refused_and_an_unknown_webhook_is_404(setup, receivers):
    made = setup.hook(receivers().url)
    assert (
        setup.client.simulate_patch(f"/v1/webhooks/{made['id']}", json={"url": "http://10.0.0.1/"}).status_code == 422
    )
    assert setup.client.simulate_patch("/v1/webhooks/0123", json={"url": "http://10.0.0.1/"}).status_code == 404
    assert setup.client.simulate_patch("/v1/webhooks/0123", json={"types": None}).status_code == 404
    assert setup.client.simulate_delete("/v1/webhooks/0123").status_code == 404
    assert setup.client.simulate_post("/v1/webhooks/0123/replay", json={"after": "0"}).status_code == 404


def test_each_wanted_event_arrives_signed_as_the_event_feed_shows_it(setup, receivers):
    receiver, other = receivers(), receivers()
    made = setup.hook(receiver.url, types=["image.created", "job.done"])
    elsewhere = setup.hook(other.url, software="other_software")
    register(setup.client, "face_detection")
    upload_images(setup.client, 2)
    for job in claim(setup.client, max=2):
        setup.client.simulate_put(
            f"/v1/software/face_detection/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}}
        )
    setup.sequence()
    assert drain(setup.new_sender()) == 4
    feed = setup.client.simulate_get("/v1/events", params={"types": "image.created,job.done"}).json["events"]
    got = receiver.events(made["secret"])
    # Verified, and exactly what GET /v1/events shows; images go at once, each image's events in order.
    assert sorted(got, key=lambda event: int(event["id"])) == feed
    assert by_image(got) == by_image(feed)
    assert sorted(headers["webhook-id"] for headers, _ in receiver.received) == sorted(event["id"] for event in feed)
    assert other.received == [] and setup.deliveries(elsewhere) == []
    listed = setup.deliveries(made, status="delivered")
    assert [(item["event_id"], item["attempts"], item["last_status_code"]) for item in listed] == [
        (event["id"], 1, 200) for event in feed
    ]
    assert all(item["next_attempt_at"] is None for item in listed)
    with pytest.raises(standardwebhooks.WebhookVerificationError):  # another webhook's secret does not verify
        receiver.events(elsewhere["secret"])


def test_a_5xx_is_tried_again_after_a_backoff_honouring_retry_after_until_a_2xx(setup, receivers, clock):
    receiver = receivers([500, (503, {"Retry-After": "120"}), 200])
    made = setup.hook(receiver.url)
    upload_images(setup.client, 1)
    setup.sequence()
    sender = setup.new_sender()
    assert drain(sender) == 1
    [pending] = setup.deliveries(made)
    assert pending["status"] == "pending" and pending["attempts"] == 1 and pending["last_status_code"] == 500
    assert pending["next_attempt_at"] == clock.now + 2.0  # the first backoff, full jitter at its top
    assert drain(sender) == 0  # not due yet
    clock.advance(2)
    assert drain(sender) == 1
    [pending] = setup.deliveries(made)
    assert pending["attempts"] == 2 and pending["next_attempt_at"] == clock.now + 120  # Retry-After over 4 s
    clock.advance(119)
    assert drain(sender) == 0
    clock.advance(1)
    assert drain(sender) == 1
    [done] = setup.deliveries(made)
    assert (done["status"], done["attempts"], done["last_status_code"]) == ("delivered", 3, 200)
    events = receiver.events(made["secret"])
    assert len(events) == 3 and events[0] == events[1] == events[2]  # the same message, the same webhook-id
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 1


def test_retries_end_failed_once_the_retry_time_has_passed(setup, receivers, clock):
    receiver = receivers([500] * 100)
    made = setup.hook(receiver.url)
    upload_images(setup.client, 1)
    setup.sequence()
    sender = setup.new_sender()
    while drain(sender) or setup.deliveries(made)[0]["status"] == "pending":
        clock.advance(MAX_WAIT := 3600)
    [failed] = setup.deliveries(made, status="failed")
    assert failed["last_status_code"] == 500 and failed["next_attempt_at"] is None
    assert 2 <= failed["attempts"] <= 14 and MAX_WAIT  # backoff doubles: 2, 4, 8 ... up to the hour


@pytest.mark.parametrize("status", [400, 404, 410, 302])
def test_any_other_answer_fails_the_delivery_at_once_and_it_is_listed(setup, receivers, status):
    receiver = receivers([(status, {"Location": "http://127.0.0.1/"})])
    made = setup.hook(receiver.url)
    upload_images(setup.client, 1)
    setup.sequence()
    assert drain(setup.new_sender()) == 1
    [failed] = setup.deliveries(made, status="failed")
    assert (failed["attempts"], failed["last_status_code"]) == (1, status)
    assert str(status) in failed["last_error"]
    assert setup.deliveries(made, status="pending") == []


def test_one_images_events_arrive_in_order_while_other_images_go_on(setup, receivers, clock):
    register(setup.client, "face_detection")
    receiver = receivers([500])  # the first event (the software's) fails once
    made = setup.hook(receiver.url, types=["image.created", "job.done"])
    first, second = upload_images(setup.client, 2)
    for job in claim(setup.client, max=2):
        setup.client.simulate_put(
            f"/v1/software/face_detection/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}}
        )
    setup.sequence()
    sender = setup.new_sender()
    drain(sender)
    got = receiver.events(made["secret"])
    # The image whose first event was answered 500 waits for its retry, its job.done behind it; the
    # other image's events go on, in their order.
    failed = got[0]["image_id"]
    other = second if failed == first else first
    assert by_image(got) == {failed: ["image.created"], other: ["image.created", "job.done"]}
    clock.advance(2)
    drain(sender)
    assert by_image(receiver.events(made["secret"]))[failed] == ["image.created", "image.created", "job.done"]


def by_image(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each image's event types, in the order given."""
    grouped: dict[str, list[str]] = {}
    for event in events:
        grouped.setdefault(event["image_id"], []).append(event["type"])
    return grouped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_delivery_survives_a_restart_while_its_receiver_was_down(setup, receivers, clock):
    port = free_port()
    made = setup.hook(f"http://127.0.0.1:{port}/hook")
    upload_images(setup.client, 1)
    setup.sequence()
    assert drain(setup.new_sender()) == 1  # refused: nothing listens
    [pending] = setup.deliveries(made)
    assert pending["status"] == "pending" and pending["last_error"].startswith("connection error")
    receiver = receivers(port=port)
    clock.advance(2)
    assert drain(setup.new_sender()) == 1  # another sender, as after a restart: the row is all it needs
    assert [event["type"] for event in receiver.events(made["secret"])] == ["image.created"]
    assert setup.deliveries(made)[0]["status"] == "delivered"


def test_replay_delivers_again_every_later_event_of_the_webhooks_types(setup, receivers):
    receiver = receivers()
    upload_images(setup.client, 2)
    setup.sequence()
    made = setup.hook(receiver.url, types=["image.created"])  # made after the events: it has none yet
    events = setup.client.simulate_get("/v1/events").json["events"]
    assert drain(setup.new_sender()) == 0
    replayed = setup.client.simulate_post(f"/v1/webhooks/{made['id']}/replay", json={"after": "0"})
    assert replayed.status_code == 200 and replayed.json == {"replayed": 2}
    assert drain(setup.new_sender()) == 2
    again = setup.client.simulate_post(f"/v1/webhooks/{made['id']}/replay", json={"after": events[0]["id"]})
    assert again.json == {"replayed": 1}
    assert drain(setup.new_sender()) == 1
    got = receiver.events(made["secret"])  # the two of the first replay go at once, in either order
    assert sorted(got[:2], key=lambda event: int(event["id"])) == [events[0], events[1]] and got[2] == events[1]
    # A delivery made anew by a replay has a webhook-id of its own: a receiver that drops the IDs it
    # has seen (as Standard Webhooks advises) takes it. The body's id stays the event's.
    ids = [headers["webhook-id"] for headers, _ in receiver.received]
    assert sorted(ids[:2]) == sorted([events[0]["id"], events[1]["id"]]) and ids[2] == f"{events[1]['id']}-r1"
    bad = setup.client.simulate_post(f"/v1/webhooks/{made['id']}/replay", json={"after": "999999"})
    assert bad.status_code == 400


def test_a_pending_delivery_fails_once_its_event_is_no_longer_kept(setup, receivers, clock):
    receiver = receivers([500])
    made = setup.hook(receiver.url)
    upload_images(setup.client, 1)
    setup.sequence()
    sender = setup.new_sender()
    drain(sender)
    sequencer = setup.served.service.sequencer
    clock.advance(sequencer.retain_seconds + 1)
    sequencer.remove_expired()
    assert drain(sender) == 1  # the event is gone: nothing to send
    [failed] = setup.deliveries(made)
    assert (failed["status"], failed["last_error"]) == ("failed", GONE)
    sender._webhooks.forget_removed(sequencer.retained_after(), clock.now)
    assert setup.deliveries(made) == []
    assert len(receiver.received) == 1


def test_a_dead_receiver_delays_neither_another_webhook_nor_an_api_request(setup, receivers, clock):
    dead, alive = receivers(hang=True), receivers()
    dead_hook = setup.hook(dead.url)
    setup.hook(alive.url)
    sender = setup.new_sender(threads=2, timeout_seconds=3.0)
    sender.start()
    started = time.monotonic()
    upload_images(setup.client, 1)
    setup.sequence()  # rings the sender's bell
    assert alive.wait_for(1, timeout_seconds=2)  # well before the dead receiver's timeout
    asked = time.monotonic()
    assert setup.client.simulate_get("/v1/webhooks").status_code == 200
    assert time.monotonic() - asked < 1
    assert time.monotonic() - started < 3
    sender.stop()  # its thread ends with the timeout
    [pending] = setup.deliveries(dead_hook)
    assert pending["status"] == "pending" and pending["last_error"].startswith("timeout")
    with setup.served.service.database.connection():
        assert Webhook.get_by_id(dead_hook["id"]).next_attempt_at > clock.now  # the whole webhook backs off
    assert setup.new_sender().run_once() is None  # nothing due: the dead receiver holds no thread now


def test_two_senders_never_send_one_webhooks_deliveries_at_once(setup, receivers):
    receiver = receivers(pause=0.01)
    made = setup.hook(receiver.url)
    senders = [setup.new_sender(threads=3), setup.new_sender(threads=3)]
    for sender in senders:
        sender.start()
    upload_images(setup.client, 15)
    setup.sequence()
    assert receiver.wait_for(15)
    for sender in senders:
        sender.stop()  # any send in flight ends first: a second copy would be counted
    ids = [headers["webhook-id"] for headers, _ in receiver.received]
    assert len(ids) == len(set(ids)) == 15
    # One lease per webhook: at most CONCURRENT_SENDS of its deliveries at once, never two of one image.
    assert 1 < receiver.most_in_flight <= CONCURRENT_SENDS and receiver.overlapping == []
    with setup.served.service.database.connection():
        assert Delivery.select().where(Delivery.status == "delivered").count() == 15
    assert {item["attempts"] for item in setup.deliveries(made)} == {1}


def wait_for_attempt(url: str, hook: dict[str, Any], timeout_seconds: float = 20) -> dict[str, Any]:
    """The webhook's first delivery once it was tried (a server's API is polled: no event to await)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        listed = requests.get(f"{url}/v1/webhooks/{hook['id']}/deliveries", timeout=10).json()["deliveries"]
        if listed and listed[0]["attempts"]:
            return listed[0]
        time.sleep(0.05)
    raise AssertionError("the delivery was never tried")


@pytest.mark.concurrency
def test_served_deliveries_go_once_from_two_server_processes_and_survive_a_restart(
    start_server, receivers, tmp_path, monkeypatch
):
    monkeypatch.setenv("HEARTBEAT_URL_ALLOW", "127.0.0.0/8")
    shared = tmp_path / "shared-data"
    servers = [start_server(data_dir=shared), start_server(data_dir=shared)]
    receiver, down_port = receivers(pause=0.005), free_port()
    made = requests.post(f"{servers[0].url}/v1/webhooks", json={"url": receiver.url}, timeout=10).json()
    down = requests.post(
        f"{servers[1].url}/v1/webhooks", json={"url": f"http://127.0.0.1:{down_port}/hook"}, timeout=10
    ).json()
    for number, data in enumerate(distinct_images(12)):
        files = {"file": ("a.png", data, "image/png")}
        url = servers[number % 2].url
        assert requests.post(f"{url}/v1/images", files=files, timeout=10).status_code == 201
    assert receiver.wait_for(12, timeout_seconds=30)
    ids = [headers["webhook-id"] for headers, _ in receiver.received]
    assert len(set(ids)) == len(ids) == 12
    assert receiver.most_in_flight <= CONCURRENT_SENDS and receiver.overlapping == []
    assert len(receiver.events(made["secret"])) == 12
    assert wait_for_attempt(servers[0].url, down)["last_error"].startswith("connection error")
    for server in servers:
        server.stop()
    back = receivers(port=down_port)  # the receiver comes back while no server runs
    start_server(data_dir=shared)
    assert back.wait_for(12, timeout_seconds=30)  # the first retry is due within 2 s (full jitter)
    assert len(back.events(down["secret"])) == 12


def test_senders_are_woken_by_deliveries_made_not_by_every_pass(setup, receivers):
    """A sequencing pass whose events no webhook wants leaves the senders asleep (with no webhook at
    all, the passes under load would otherwise wake every sender thread of every process for nothing);
    a pass that makes deliveries, and a replay, wake them once they have committed."""
    made = setup.served.service.webhooks.made
    sequencer = setup.served.service.sequencer
    register(setup.client, "face_detection")
    first, second = distinct_images(2)
    upload(setup.client, first)
    rings = made.rings
    assert sequencer.run_once() == 2 and made.rings == rings, "no webhook: nothing to send"
    hook = setup.hook(receivers().url, types=["job.done"])
    upload(setup.client, second)
    assert sequencer.run_once() == 1 and made.rings == rings, "an event the webhook does not want"
    job = claim(setup.client)[0]
    setup.client.simulate_put(
        f"/v1/software/face_detection/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}}
    )
    assert sequencer.run_once() >= 1 and made.rings == rings + 1
    replay = setup.client.simulate_post(f"/v1/webhooks/{hook['id']}/replay", json={"after": "0"})
    assert replay.json == {"replayed": 1} and made.rings == rings + 2
