"""Job boards (memory://, zookeeper://) and the conductor.

Every test taking the parametrized `board` fixture (conftest.py) runs on both
boards, so a failure names the board that broke the contract. ZooKeeper tests
use a root path of their own on the server at 127.0.0.1:2181.
"""
