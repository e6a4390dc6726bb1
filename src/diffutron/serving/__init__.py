"""Serving: an OpenAI-compatible HTTP server with continuous batching, and a page where answers unmask.

    from diffutron.serving import create_app            # FastAPI app; or the CLI: diffutron serve MODEL

``scheduler.py`` owns the model (one thread, a ``DecodeBatch`` that requests join and leave between
steps); ``app.py`` holds the routes; ``openai_schema.py`` the request bodies; ``metrics.py`` the
Prometheus metrics; ``static/`` the page. See docs/serving.md.
"""

from .app import create_app

__all__ = ["create_app"]
