"""The asyncio suites."""
