"""Transactional outbox: commit what was accepted locally, deliver it to the target later, exactly once.

This package knows PostgreSQL and the target tables; it never imports the HTTP service.
"""
