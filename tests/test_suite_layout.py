"""How the suite is split between its two workers (tests/conftest.py)."""

from tests.conftest import PLATFORM_FILES


def test_the_files_that_use_the_session_platform_are_listed(request):
    """A file using the session platform but not listed would be a unit of its own, and the other worker would
    build the platform a second time (~45 s); a listed file that does not use it only waits for its unit."""
    collected = request.session.items
    using = {item.path.name for item in collected if "platform" in getattr(item, "fixturenames", ())}
    assert using <= set(PLATFORM_FILES), f"add {sorted(using - set(PLATFORM_FILES))} to conftest.PLATFORM_FILES"
    present = {item.path.name for item in collected}
    if present >= set(PLATFORM_FILES):  # (a run of the whole suite)
        assert set(PLATFORM_FILES) <= using, f"{sorted(set(PLATFORM_FILES) - using)} no longer use the platform"
