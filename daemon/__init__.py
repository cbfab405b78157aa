"""nvirtd: a declarative VM manager for libvirt hosts."""

__version__ = "0.1.0"
