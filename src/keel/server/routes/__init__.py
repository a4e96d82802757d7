"""The control plane's routes, one module per part of the API."""
