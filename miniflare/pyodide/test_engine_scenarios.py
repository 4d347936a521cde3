"""The engine scenarios (scenarios.py, also run on CPython by tests/test_cloudflare_parity.py)
through CloudflareHost over the JS storage fake: DurableObjectStorage raw and SDK-wrapped, and
SqlJournalStorage over the fake of a SQLite-backed object (``sql``)."""

import cf_runtime
import fake_workers

from workkit_workflow.cloudflare._host import CloudflareHost

import scenarios

_runs = iter(range(10_000))


class PyodideHarness:
    def __init__(self, wrapped, sqlite=False):
        self.clock = scenarios.ManualClock()
        self.prefix = f"run{next(_runs)}:"
        self.wrapped = wrapped
        self.sqlite = sqlite

    def host(self, name):
        ctx = cf_runtime.makeState(self.prefix + name, False, self.sqlite)
        if self.wrapped:
            ctx = fake_workers.DurableObjectContext(ctx)
        return CloudflareHost(ctx, clock=self.clock)


def _make(scenario, wrapped, sqlite=False):
    async def test():
        await scenario(PyodideHarness(wrapped, sqlite))

    return test


for _scenario in scenarios.SCENARIOS:
    globals()[f"test_{_scenario.__name__}_raw"] = _make(_scenario, False)
    globals()[f"test_{_scenario.__name__}_sdk"] = _make(_scenario, True)
    globals()[f"test_{_scenario.__name__}_sql"] = _make(_scenario, True, sqlite=True)


async def test_host_reads_the_object_name_when_the_runtime_gives_it():
    assert CloudflareHost(cf_runtime.makeState("named", True)).object_name == "named"
    assert CloudflareHost(cf_runtime.makeState("anon", False)).object_name is None
