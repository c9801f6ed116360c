"""Adapters that plug nbstream into host frameworks (see ``integrations.neuralbench``)."""
