"""The names bench scripts imported from here before bench/_harness.py held them (kept so that
``from _report import machine, write_section`` goes on working); new scripts import _harness."""

from _harness import DOC, HEADER, machine, marked_sections, write_block, write_section

__all__ = ["DOC", "HEADER", "machine", "marked_sections", "write_block", "write_section"]
