"""`uv run python -m bench.floor`: the CPU a flow costs its services at the least, with the
libraries they are built on and none of our code (issue 21).

Each of the operations a flow is made of is timed alone, as the services do it, and its CPU
(user and system, of the thread that does it) divided by the count:

- a PostgreSQL statement: a prepared single-row INSERT in autocommit over an asyncpg pool (a
  round trip; BEGIN and COMMIT are one each too);
- a RabbitMQ publish, persistent, with publisher confirm, and a delivery consumed and acked,
  through FastStream set up as the services' bus is, each on its own connection;
- an email sent over a kept SMTP connection (aiosmtplib) to the bench's sink, which runs in a
  thread of its own;
- an HTTP call served by uvicorn (httptools, uvloop) and FastAPI, a route with a JSON body
  validated by pydantic and a JSON answer, in a thread of its own; the client in another.

Times the operations a flow needs (`--statements`, `--published`, `--delivered`, `--emails`,
`--calls`; defaults as counted on 2026-12-06, bench/README.md), that is the floor: what the
services would take per flow if our own code cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import threading
import time
import uuid
from email.mime.text import MIMEText
from pathlib import Path

import aio_pika
import aiohttp
import aiosmtplib
import asyncpg
import uvicorn
import uvloop
from contacts_shared.bus import PREFETCH
from contacts_shared.consumer import raw_body
from contacts_tools.mailsink import MailSink
from fastapi import FastAPI
from faststream import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from pydantic import BaseModel

from bench.harness import concurrently


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("CONTACTS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--amqp-url", default=os.environ.get("CONTACTS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--count", type=int, default=4000, help="operations timed of each kind")
    parser.add_argument("--statements", type=float, default=44.0, help="PostgreSQL statements per flow, BEGIN and COMMIT included")
    parser.add_argument("--published", type=float, default=12.0, help="messages the services publish per flow")
    parser.add_argument("--delivered", type=float, default=8.0, help="messages delivered to the services per flow")
    parser.add_argument("--emails", type=float, default=6.0, help="emails per flow")
    parser.add_argument("--calls", type=float, default=3.0, help="HTTP calls per flow")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def thread_cpu(ident: int | None = None) -> float:
    """CPU seconds (user and system) of a thread: the calling one, or the one `ident` names."""
    if ident is None:
        return time.thread_time()
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def _no_reset(_: asyncpg.Connection) -> None:
    pass


async def statement(url: str, count: int) -> float:
    table = f"bench_floor_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10, reset=_no_reset)  # as the services' pools
    try:
        await pool.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, message_id uuid NOT NULL, body text NOT NULL)")
        body = "x" * 400

        async def insert() -> None:
            async with pool.acquire() as conn:
                await conn.execute(f"INSERT INTO {table} (message_id, body) VALUES ($1, $2)", uuid.uuid4(), body)

        await concurrently(200, 10, insert)  # statements prepared, connections warm
        started = thread_cpu()
        await concurrently(count, 10, insert)
        return (thread_cpu() - started) / count
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def publish_and_deliver(url: str, count: int) -> tuple[float, float]:
    """CPU per publish (with confirm) and per delivery (consumed and acked), through FastStream
    set up as the services' bus is (`contacts_shared.bus`): two brokers, as one service publishes
    and another consumes, a quorum queue, manual acks, the body undecoded."""
    queue = RabbitQueue(f"bench.floor.{uuid.uuid4().hex[:8]}", queue_type=QueueType.QUORUM, durable=True)
    publisher, consumer = new_broker(url), new_broker(url)
    received, all_in = 0, asyncio.Event()

    @consumer.subscriber(queue, ack_policy=AckPolicy.MANUAL, decoder=raw_body)
    async def on_message(body: bytes) -> None:
        nonlocal received
        await consumer.context.get_local("message").ack()
        received += 1
        if received == count:
            all_in.set()

    body = b'{"floor": "' + b"x" * 400 + b'"}'  # about the size of our envelopes
    await publisher.start()
    try:
        await publisher.declare_queue(queue)

        async def publish() -> None:
            await publisher.publish(body, routing_key=queue.name, persist=True, message_id=str(uuid.uuid4()), content_type="application/json")

        started = thread_cpu()
        await concurrently(count, 32, publish)
        per_publish = (thread_cpu() - started) / count

        started = thread_cpu()
        await consumer.start()
        await asyncio.wait_for(all_in.wait(), timeout=120)
        per_delivery = (thread_cpu() - started) / count
        return per_publish, per_delivery
    finally:
        await consumer.stop()
        await publisher.stop()
        connection = await aio_pika.connect(url)  # FastStream declares queues, it does not delete them
        async with connection, connection.channel() as channel:
            await channel.queue_delete(queue.name)


def new_broker(url: str) -> RabbitBroker:
    return RabbitBroker(url, logger=None, apply_types=False, default_channel=Channel(prefetch_count=PREFETCH))


async def email(count: int) -> float:
    port = free_port()
    sink = MailSink("127.0.0.1", port, free_port())
    sink.start()  # in a thread of its own: its CPU is not the client's
    try:
        clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) for _ in range(3)]
        for smtp in clients:
            await smtp.connect()
        sent = 0

        async def send(smtp: aiosmtplib.SMTP, times: int) -> None:
            nonlocal sent
            for _ in range(times):
                # Built as the notifier builds its emails (compat32, the cheaper of the two).
                message = MIMEText("x" * 600, "plain", "us-ascii")  # about the size of our emails
                message["From"] = "floor@example.test"
                message["To"] = f"floor{sent}@example.test"
                message["Subject"] = "Floor"
                sent += 1
                await smtp.send_message(message)

        await asyncio.gather(*(send(smtp, 20) for smtp in clients))
        started = thread_cpu()
        await asyncio.gather(*(send(smtp, count // len(clients)) for smtp in clients))
        cost = (thread_cpu() - started) / (count // len(clients) * len(clients))
        for smtp in clients:
            await smtp.quit()
        return cost
    finally:
        sink.stop()


class Body(BaseModel):
    token: str


def http_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/contact-changes/{request_id}/accept")
    async def accept(request_id: uuid.UUID, body: Body) -> dict[str, str]:
        return {"id": str(request_id), "state": "validating", "token": body.token[:4]}

    return app


async def http_call(count: int) -> float:
    """CPU of the server's thread per call."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(http_app(), host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:

            async def call() -> None:
                async with client.post(f"/v1/contact-changes/{uuid.uuid4()}/accept", json={"token": "x" * 43}) as response:
                    await response.read()

            await concurrently(200, 16, call)
            started = thread_cpu(thread.ident)
            await concurrently(count, 16, call)
            return (thread_cpu(thread.ident) - started) / count
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(args: argparse.Namespace) -> dict[str, float]:
    per_publish, per_delivery = await publish_and_deliver(args.amqp_url, args.count)
    return {
        "statement": await statement(args.database_url, args.count),
        "publish": per_publish,
        "delivery": per_delivery,
        "email": await email(args.count // 4),
        "call": await http_call(args.count // 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    costs = uvloop.run(measure(args))
    per_flow = {
        "statement": args.statements,
        "publish": args.published,
        "delivery": args.delivered,
        "email": args.emails,
        "call": args.calls,
    }
    total = 0.0
    print(f"{'operation':<10} {'CPU each':>10} {'per flow':>9} {'CPU per flow':>13}")
    for name, cost in costs.items():
        total += cost * per_flow[name]
        print(f"{name:<10} {cost * 1e6:>7.0f} µs {per_flow[name]:>9.1f} {cost * per_flow[name] * 1e3:>10.2f} ms")
    print(f"{'floor':<10} {'':>10} {'':>9} {total * 1e3:>10.2f} ms")
    if args.out:
        figures = {"cpu_seconds_each": costs, "per_flow": per_flow, "floor_ms_per_flow": total * 1e3}
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
