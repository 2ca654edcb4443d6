"""Storage: the database clients (a real MongoDB through motor, or the embedded trial engine),
the typed database and collection handles, and the query recorder.

The one package that imports the drivers (motor, pymongo, mongomock): everything else imports
what it needs from here (ruff's banned-api rule, TID251). `client.py` builds the real client
and `Storage`; `embedded.py` is the single-process trial engine; `recorder.py` records every
query's shape for the tests' query audit (tests/support/query_audit.py); `types.py` names the
handles.
"""

from pymongo import ASCENDING as ASCENDING
from pymongo import DESCENDING as DESCENDING
from pymongo import IndexModel as IndexModel
from pymongo.errors import BulkWriteError as BulkWriteError
from pymongo.errors import DuplicateKeyError as DuplicateKeyError
from pymongo.errors import OperationFailure as OperationFailure

from crm_core.platform.storage.client import (
    DATABASE as DATABASE,
)
from crm_core.platform.storage.client import (
    TENANT_ID_RE as TENANT_ID_RE,
)
from crm_core.platform.storage.client import (
    Storage as Storage,
)
from crm_core.platform.storage.client import (
    find_in_batches as find_in_batches,
)
from crm_core.platform.storage.client import (
    is_database_error as is_database_error,
)
from crm_core.platform.storage.client import (
    is_database_unreachable as is_database_unreachable,
)
from crm_core.platform.storage.client import (
    skip_missing_index_options as skip_missing_index_options,
)
from crm_core.platform.storage.client import (
    update_each as update_each,
)
from crm_core.platform.storage.embedded import EmbeddedDatabase as EmbeddedDatabase
from crm_core.platform.storage.embedded import EmbeddedWrites as EmbeddedWrites
from crm_core.platform.storage.recorder import QueryLog as QueryLog
from crm_core.platform.storage.recorder import QueryRecord as QueryRecord
from crm_core.platform.storage.recorder import filter_conditions as filter_conditions
from crm_core.platform.storage.recorder import query_purpose as query_purpose
from crm_core.platform.storage.recorder import recording as recording
from crm_core.platform.storage.types import Client as Client
from crm_core.platform.storage.types import Collection as Collection
from crm_core.platform.storage.types import Cursor as Cursor
from crm_core.platform.storage.types import Database as Database
from crm_core.platform.storage.types import MongoDocument as MongoDocument
from crm_core.platform.storage.types import system_collection as system_collection
