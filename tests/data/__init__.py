"""Tests of ssdfast.data."""
