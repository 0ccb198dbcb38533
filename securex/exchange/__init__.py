"""Confidential exchange: plis of files and messages sent instead of e-mail attachments."""
