"""Accounts: communes (tenants), users and roles, two factors, API clients, sessions."""
