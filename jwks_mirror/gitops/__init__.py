"""Manifest tooling for GitOps repositories: rewrite ``RequestAuthentication`` jwksUris to the
mirror and back, pin them to a key-set version, and write the mirror's issuer list.

Data in, data out, plus file handling: :mod:`~jwks_mirror.gitops.roundtrip` (YAML text to
trees and back), :mod:`~jwks_mirror.gitops.manifests` (walking the rules, the annotation),
:mod:`~jwks_mirror.gitops.mesh` (which URLs are in-mesh, which are the mirror's),
:mod:`~jwks_mirror.gitops.rewrite` and :mod:`~jwks_mirror.gitops.pinning` (the edits), and
:mod:`~jwks_mirror.gitops.files` (reading inputs, all-or-nothing writes). Nothing here talks
to a network or imports the serving side; it uses only the shared core (errors, settings). The
command-line front ends are in ``jwks_mirror.cli``.
"""
