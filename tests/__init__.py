"""The test suite. A package only so that its helpers import as `tests.support.<module>`; the test
directories below have no __init__.py, so each test file's basename must stay unique."""
