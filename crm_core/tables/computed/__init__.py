"""Computed columns (issue #24, docs/computed.md): formula, lookup and rollup, evaluated inside
MongoDB. The expression language (parser, type checker, compiler to an aggregation expression,
a reference evaluator for tests), the column types and the list path's pipeline."""
