"""Tables: column types (`columns`), filters, validators, definitions (`meta`), rows (`rows`),
who may reach them (`access`, `shares`), display names (`aliases`), built-in entities."""
