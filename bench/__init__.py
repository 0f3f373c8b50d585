"""The end-to-end benchmark: complete contact-change flows per second and their latency,
against the raw ceilings of RabbitMQ, PostgreSQL and SMTP on the same machine.

Run `uv run python -m bench --help`.
"""
