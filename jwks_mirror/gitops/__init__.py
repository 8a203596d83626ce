"""Manifest tooling for GitOps repositories: rewrite ``RequestAuthentication`` jwksUris to the
mirror and back, pin them to a key-set version, and write the mirror's issuer list.

Pure data in, data out: nothing here talks to a network or imports the serving side; it uses
only the shared core (errors, settings). The command-line front ends are in ``jwks_mirror.cli``.
"""
