"""Pages of the exchange for the commune's agents (French): the queue of requests."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("comedec", __name__, template_folder="templates")
