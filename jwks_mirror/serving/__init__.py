"""The service: key state, fetching, peers, the refresh schedule, metrics, the mirror and the
server that runs them."""
