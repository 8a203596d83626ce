"""Building blocks of the end-to-end suite: real Envoy processes, a switchable plain issuer,
the mirror as a subprocess, and the configurations that wire them into Istio's data path.

Layers, bottom up (each module only imports the ones above it in this list):

    procs.py     free ports, polling with deadlines, log tails, the process registry
    http.py      a tiny proxy-free HTTP/1.1 client for assertions (status, headers, body)
    tokens.py    issuer signing keys and JWTs (jwcrypto)
    issuer.py    the plain issuer: an aiohttp app in its own thread, behaviour switchable
    envoy.py     Envoy configs (issuer sidecar, mirror sidecar, verifier) and the process
    mirror.py    ``jwks-mirror serve`` as a subprocess, its admin API and CLI
    mesh.py      one issuer's workload (app + STRICT sidecar) and the assembled data path
    freshness.py IdPs with a key schedule, istiod's resolver with its timer, token streams
"""
