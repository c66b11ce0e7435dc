"""Transactional outbox engine: commit what was accepted locally, deliver it to a target later, exactly once.

The engine owns the outbox table and everything that moves its rows; it is handed its target (outbox.target:
the kinds, their deliverers and which kinds wait on which) when it is built, and never imports the service.
"""
