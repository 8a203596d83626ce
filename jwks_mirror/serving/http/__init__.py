"""The two ports: the public JWKS port (HTTP/1.1 on llhttp, TLS) and the admin port (aiohttp),
and how both accept connections."""
