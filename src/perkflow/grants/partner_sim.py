"""A partner simulator: a real HTTP server on loopback with latency, errors, timeouts, callbacks."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from perkflow.grants.rules import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, signature_problem


@dataclass(frozen=True)
class SimConfig:
    """How badly the simulated partner behaves."""

    secret: str
    latency_ms: int = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_sleep_s: float = 5.0
    accept_rate: float = 0.0
    duplicate_callbacks: float = 0.0
    callback_delay_ms: int = 50
    seed: int = 0


@dataclass
class Order:
    """One order the partner holds, found again by its idempotency key."""

    order_id: str
    key: str
    grant_id: int
    state: str
    callback_url: str


@dataclass
class SimState:
    """Everything the simulator saw and did, for tests to assert on."""

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    bad_signatures: int = 0
    orders: dict[str, Order] = field(default_factory=dict)
    orders_per_key: Counter[str] = field(default_factory=Counter)
    orders_per_grant: Counter[int] = field(default_factory=Counter)
    revocations: Counter[str] = field(default_factory=Counter)
    callbacks_sent: int = 0
    callbacks_failed: int = 0


class PartnerSim:
    """The simulator's behaviour and state; `app` serves it over HTTP."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.state = SimState()
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/orders", self.orders, methods=["POST"]),
                Route("/stats", self.stats_endpoint, methods=["GET"]),
            ]
        )

    def stats(self) -> dict[str, Any]:
        """Counts so far; `max_orders_per_grant` above 1 would mean a grant was fulfilled twice."""
        with self._lock:
            s = self.state
            return {
                "requests": s.requests,
                "errors": s.errors,
                "timeouts": s.timeouts,
                "bad_signatures": s.bad_signatures,
                "orders": len(s.orders),
                "fulfilled": sum(1 for o in s.orders.values() if o.state == "fulfilled"),
                "max_orders_per_key": max(s.orders_per_key.values(), default=0),
                "max_orders_per_grant": max(s.orders_per_grant.values(), default=0),
                "orders_per_grant": {str(k): v for k, v in s.orders_per_grant.items()},
                "revocations": sum(s.revocations.values()),
                "callbacks_sent": s.callbacks_sent,
                "callbacks_failed": s.callbacks_failed,
            }

    async def stats_endpoint(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    async def orders(self, request: Request) -> JSONResponse:
        body = await request.body()
        problem = signature_problem(
            self.config.secret,
            body,
            request.headers.get(SIGNATURE_HEADER),
            now_ts=int(time.time()),
        )
        with self._lock:
            self.state.requests += 1
            if problem:
                self.state.bad_signatures += 1
        if problem:
            return JSONResponse({"error": problem}, status_code=401)
        try:
            data = json.loads(body)
            key = str(request.headers[IDEMPOTENCY_HEADER])
            grant_id = int(data["grant_id"])
            order_key = str(data["idempotency_key"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "malformed request"}, status_code=400)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        draw = self._draw()
        if draw < self.config.error_rate:
            with self._lock:
                self.state.errors += 1
            return JSONResponse({"error": "simulated outage"}, status_code=503)
        if data.get("action") == "revoke":
            reply = self._revoke(key=key, order_key=order_key)
        else:
            reply = self._order(key=order_key, grant_id=grant_id, callback_url=data["callback_url"])
        if draw < self.config.error_rate + self.config.timeout_rate:
            # The work is done but the answer comes too late: the caller must retry with its key.
            with self._lock:
                self.state.timeouts += 1
            await asyncio.sleep(self.config.timeout_sleep_s)
        return JSONResponse(reply)

    def _revoke(self, *, key: str, order_key: str) -> dict[str, Any]:
        with self._lock:
            order = self.state.orders.get(order_key)
            if order is None:
                return {"status": "revoked", "order_id": None}
            if order.state != "revoked":
                self.state.revocations[key] += 1
                order.state = "revoked"
            return {"status": "revoked", "order_id": order.order_id}

    def _order(self, *, key: str, grant_id: int, callback_url: str) -> dict[str, Any]:
        accepted = self._draw() < self.config.accept_rate
        with self._lock:
            order = self.state.orders.get(key)
            if order is None:
                # Honour the idempotency key: the same key is the same order, never a second one.
                order = Order(
                    order_id=f"SIM-{len(self.state.orders) + 1:07d}",
                    key=key,
                    grant_id=grant_id,
                    state="accepted" if accepted else "fulfilled",
                    callback_url=callback_url,
                )
                self.state.orders[key] = order
                self.state.orders_per_key[key] += 1
                self.state.orders_per_grant[grant_id] += 1
                if accepted:
                    self._spawn(self._confirm_later(order))
            elif order.state == "revoked":
                order.state = (
                    "fulfilled"  # fulfilled again (a re-drive): the same order, not a new one
                )
            return {"status": order.state, "order_id": order.order_id}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _confirm_later(self, order: Order) -> None:
        await asyncio.sleep(self.config.callback_delay_ms / 1000)
        with self._lock:
            if order.state == "accepted":
                order.state = "fulfilled"
        body = json.dumps(
            {
                "callback_id": f"cb-{order.order_id}",
                "grant_id": order.grant_id,
                "order_id": order.order_id,
                "status": "fulfilled",
            },
            separators=(",", ":"),
        ).encode()
        copies = 2 if self._draw() < self.config.duplicate_callbacks else 1
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(copies):
                await self._post_callback(client, order.callback_url, body)

    async def _post_callback(self, client: httpx.AsyncClient, url: str, body: bytes) -> None:
        for attempt in range(5):  # a real partner retries its callbacks a few times too
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(self.config.secret, body, timestamp=int(time.time())),
            }
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code < 500:
                    with self._lock:
                        self.state.callbacks_sent += 1
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1 * 2**attempt)
        with self._lock:
            self.state.callbacks_failed += 1


class SimServer:
    """The simulator served by uvicorn in a background thread (tests, the demo)."""

    def __init__(self, sim: PartnerSim, *, port: int, host: str = "127.0.0.1") -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(
                sim.app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="partner-sim")

    @property
    def url(self) -> str:
        """Where to send orders: a partner's connector_url."""
        return f"http://{self.host}:{self.port}/orders"

    def start(self, *, timeout_s: float = 20.0) -> SimServer:
        """Start serving and wait until the port answers."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("partner simulator did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (in-flight sleeps are abandoned)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve(config: SimConfig, *, port: int, host: str = "127.0.0.1") -> None:
    """Run the simulator in the foreground until interrupted."""
    uvicorn.run(PartnerSim(config).app, host=host, port=port, log_level="warning", lifespan="off")
