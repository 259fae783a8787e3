"""NAT lab: real Linux NAT in network namespaces (see lab.py) and its self-test."""
