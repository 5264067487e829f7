"""Local control: what keeps the battery safe when the cloud is gone.

* `limits` — safety rules and hysteresis as pure logic (`evaluate`).
* `command` / `gate` — parsing and deciding dispatch commands (`CommandGate`).
* `events` — the never-blocking, never-dropping outbox for critical events.
"""
