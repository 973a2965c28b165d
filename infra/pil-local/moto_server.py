"""moto's server, with DynamoDB's requests applied one at a time.

DynamoDB applies each conditional write atomically: of two writes conditional on the same
revision, exactly one succeeds. moto's server is threaded and its DynamoDB backend takes no
lock, so two concurrent conditional writes can both pass their check. Everything else here
(leases, single-use tokens, the audit chain) relies on that atomicity, so the local stack runs
moto through this wrapper, which serialises DynamoDB requests (identified by their
`X-Amz-Target`) and leaves every other service concurrent (SQS long polls must not block).
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

import moto.server

_dynamodb = threading.Lock()
_call = DomainDispatcherApplication.__call__


def _serialised(self, environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        with _dynamodb:
            # moto builds the whole response inside the call: materialise it under the lock.
            return list(_call(self, environ, start_response))
    return _call(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serialised

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
