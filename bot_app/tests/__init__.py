"""clawbot-app test suite."""
