"""Metadata store: typed models, sessions and keyword-only functions per aggregate."""
