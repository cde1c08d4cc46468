"""Ray: the dashboard client, the Jobs API, the local cluster's lifecycle, the connection."""
