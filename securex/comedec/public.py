"""The citizens' counter (SVE): a public page where a person asks for a copy or extrait."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("sve", __name__, template_folder="templates")
