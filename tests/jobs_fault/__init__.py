"""Fault tests for job boards and conductors: real ZooKeeper, real PostgreSQL, real processes."""
