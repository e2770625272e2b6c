import json, os, time
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t = time.perf_counter()
    yield
    wid = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.environ["TIMER_OUT"] + f".{wid}", "a") as f:
        f.write(json.dumps([item.nodeid, time.perf_counter() - t]) + "\n")
