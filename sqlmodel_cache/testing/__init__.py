"""Testing helpers: the transport contract suite, and the pytest plugin's fixtures.

A transport's author runs the suite by subclassing it in a test module (pytest
collects ``Test*`` classes)::

    from sqlmodel_cache.testing import LeasingTransportContract
    from my_package import MyTransport

    class TestMyTransport(LeasingTransportContract):
        def make_transport(self):
            return MyTransport()

``TransportContract`` checks get/set/delete and expiry; ``LeasingTransportContract``
also lease/fill/release and, when the transport has them, fill_many, delete_model and
invalidate; ``AsyncTransportContract`` runs all of it on an asyncio transport (its
``make_transport()`` returns one) and checks that its ``sync`` twin shares the store.
Hooks a subclass may override: the ``transport`` fixture (``async_transport`` for the
async suite) to build the transport from other fixtures; ``namespace``, the prefix of
every key a test uses (by default a random one; the test's keys are deleted after it);
``advance_clock(seconds)`` when the transport runs on a test clock (else the expiry
test waits about a second); ``lease_ttl``, to check that an abandoned lease expires;
``subscribe(transport, channel)``, to check what invalidate() publishes (done for
Redis transports). The suite needs pytest, and no pytest plugin beyond it.

The fixtures ``sqlmodel_cache`` and ``sqlmodel_cache_redis`` come with the package
(see ``sqlmodel_cache.testing.plugin``): nothing to import.
"""

import pytest

# Installed in development mode, the package is not marked for pytest's assertion
# rewriting; the suites' failures should read as well as a test module's.
pytest.register_assert_rewrite(
    "sqlmodel_cache.testing._contract", "sqlmodel_cache.testing._async_contract"
)

from ._async_contract import AsyncTransportContract  # noqa: E402
from ._contract import LeasingTransportContract, TransportContract  # noqa: E402
from .plugin import CacheFixture  # noqa: E402

__all__ = [
    "AsyncTransportContract",
    "CacheFixture",
    "LeasingTransportContract",
    "TransportContract",
]
