"""Scripts the tests run in a child interpreter (python tests/helpers/<name>.py ...); the few
that a test also imports are imported as helpers.<name> (tests/ is on sys.path)."""
