"""The Ray Serve application of mlplatform: ingress, routing, model hosting."""
