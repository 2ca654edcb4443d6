"""Tables: column types (`columns`), filters, validators, definitions (`meta`), rows (`rows`),
who may reach them (`access`, `shares`), display names (`aliases`), built-in entities.

Exports nothing: models import `columns`, and this package's services import models, so an
import here would close a circle (tests/platform/test_architecture.py). The services are
`meta.MetaService`, `rows.RowService`, `shares.ShareService` and `aliases.AliasService`."""
