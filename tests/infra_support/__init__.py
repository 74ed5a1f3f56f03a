"""Helpers for the infra tests: locate kubectl, build Kustomize overlays, walk rendered objects."""
