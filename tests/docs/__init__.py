"""Tests of the documentation: its code examples, its build checks and the
built site in a real headless browser."""
